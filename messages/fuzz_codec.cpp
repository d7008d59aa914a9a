// libFuzzer target for the codec: any byte string must decode to a message
// or to an error, never crash, and a decoded message must survive a round
// trip through encode(). Build and run: see README "Fuzzing the codec".
#include <cstdint>
#include <cstdlib>

#include "messages/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  asteroid::messages::DecodeLimits limits;
  limits.max_message_bytes = 1 << 20;
  auto decoded = asteroid::messages::decode_copy(data, size, limits);
  if (decoded.ok()) {
    auto bytes = asteroid::messages::encode(*decoded.message);
    auto again = asteroid::messages::decode_copy(bytes.data(), bytes.size());
    if (!again.ok() || again.message->index() != decoded.message->index()) std::abort();
  }
  return 0;
}
