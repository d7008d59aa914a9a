// The codec between Messages (envelope.h) and Cap'n Proto bytes: the only
// code in Asteroid that reads or writes raw message bytes.
//
// decode() treats its input as hostile: it checks the size before parsing,
// reads with explicit traversal and nesting limits, walks every field once
// (so later reads cannot throw), and checks what the schema cannot say
// (tensor sizes match their shapes, ranges are ordered, lists are bounded).
// Any failure is an error value naming what was wrong; it never crashes and
// never allocates more than a bounded multiple of the input size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "messages/envelope.h"

namespace asteroid::messages {

struct DecodeLimits {
  size_t max_message_bytes = size_t{1} << 30;  // 1 GiB: a stage's weights fit
  int nesting_limit = 16;                      // the schema nests 4 deep
  size_t max_tensor_rank = 8;
  size_t max_list_length = 1 << 20;            // group members, trace events, shape, ...
  size_t max_text_bytes = 1 << 24;             // profile JSON may be large
};

// An envelope's authorization (a coordinator's control capability,
// actors/tls.h) is at most this long.
constexpr size_t kMaxAuthorizationBytes = 64;

struct Decoded {
  std::optional<Message> message;
  std::string authorization;  // the envelope's, empty when it has none
  std::string error;  // set when message is empty
  bool ok() const { return message.has_value(); }
};

// Serialises `message` as one Cap'n Proto envelope (flat array, 8-byte
// words), with `authorization` (at most kMaxAuthorizationBytes) if given.
std::vector<char> encode(const Message& message, const std::string& authorization = {});

// Decodes bytes produced by encode(). Tensor blobs of the result share
// `bytes`, which stays alive as long as any of them does.
Decoded decode(std::shared_ptr<const std::vector<char>> bytes, const DecodeLimits& limits = {});
// Convenience for tests and tools: decodes a copy of [data, data + size).
Decoded decode_copy(const void* data, size_t size, const DecodeLimits& limits = {});

}  // namespace asteroid::messages
