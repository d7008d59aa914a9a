#include "actors/ask.h"

#include <caf/all.hpp>

#include "messages/transport.h"

namespace asteroid::actors {

std::optional<messages::Message> ask(caf::scoped_actor& self, const caf::actor& to, const messages::Message& request,
                                     std::chrono::milliseconds timeout, std::string& failure) {
  std::optional<messages::Message> answer;
  self->request(to, timeout, messages::to_wire(request))
      .receive(
          [&](messages::WireMessage& reply) {
            auto decoded = messages::from_wire(std::move(reply));
            if (!decoded.ok()) {
              failure = "malformed reply: " + decoded.error;
            } else if (auto* error = std::get_if<messages::Error>(&*decoded.message)) {
              failure = std::string(messages::to_string(error->code)) + ": " + error->message;
            } else {
              answer = std::move(decoded.message);
            }
          },
          [&](caf::error& e) { failure = self->home_system().render(e); });
  return answer;
}

}  // namespace asteroid::actors
