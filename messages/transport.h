// The one CAF message type that carries envelopes between processes:
// WireMessage holds the Cap'n Proto bytes of one envelope. CAF serialises
// it by memcpy (a char vector), so the codec stays the only code that
// understands the bytes. Every actor system that talks to Asteroid actors
// must call add_wire_types() on its config.
#pragma once

#include <caf/actor_system_config.hpp>
#include <caf/meta/type_name.hpp>

#include <vector>

#include "messages/codec.h"

namespace asteroid::messages {

struct WireMessage {
  std::vector<char> bytes;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, WireMessage& x) {
  return f(caf::meta::type_name("asteroid.wire"), x.bytes);
}

void add_wire_types(caf::actor_system_config& config);

inline WireMessage to_wire(const Message& message, const std::string& authorization = {}) {
  return WireMessage{encode(message, authorization)};
}

// Decodes a received WireMessage, taking over its bytes (no copy).
Decoded from_wire(WireMessage&& wire, const DecodeLimits& limits = {});

}  // namespace asteroid::messages
