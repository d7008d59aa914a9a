#include "messages/transport.h"

namespace asteroid::messages {

void add_wire_types(caf::actor_system_config& config) {
  config.add_message_type<WireMessage>("asteroid.wire");
}

Decoded from_wire(WireMessage&& wire, const DecodeLimits& limits) {
  return decode(std::make_shared<const std::vector<char>>(std::move(wire.bytes)), limits);
}

}  // namespace asteroid::messages
