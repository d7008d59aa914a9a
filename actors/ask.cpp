#include "actors/ask.h"

#include <caf/all.hpp>

#include "messages/transport.h"

namespace asteroid::actors {
namespace {

using ask_atom = caf::atom_constant<caf::atom("ask")>;

// Makes one request of `to` and answers it to whoever sent ask_atom; fails
// it with the down reason when `to` goes down first. Quits after answering.
caf::behavior watched_request(caf::event_based_actor* self, caf::actor to, caf::message request,
                              std::chrono::milliseconds timeout) {
  return {[=](ask_atom) mutable -> caf::result<messages::WireMessage> {
    auto promise = std::make_shared<caf::typed_response_promise<messages::WireMessage>>(
        self->make_response_promise<messages::WireMessage>());
    auto answer = [self, promise](auto&& result) {
      if (promise->pending()) promise->deliver(std::forward<decltype(result)>(result));
      self->quit();
    };
    self->monitor(to);
    self->set_down_handler([=](caf::down_msg& down) {
      if (down.source != to.address()) return;
      answer(caf::make_error(caf::sec::request_receiver_down,
                             "the actor went down (" + self->home_system().render(down.reason) + ")"));
    });
    self->request(to, timeout, std::move(request))
        .then([=](messages::WireMessage& reply) { answer(std::move(reply)); },
              [=](caf::error& e) { answer(std::move(e)); });
    return *promise;
  }};
}

}  // namespace

std::optional<messages::Message> ask(caf::scoped_actor& self, const caf::actor& to, const messages::Message& request,
                                     std::chrono::milliseconds timeout, std::string& failure) {
  return ask(self, to, caf::make_message(messages::to_wire(request)), timeout, failure);
}

namespace {

// Waits for the helper's answer to ask_atom (the request is already on its way).
template <typename Handle>
AskAnswer await(caf::scoped_actor& self, Handle&& handle) {
  AskAnswer out;
  handle.receive(
      [&](messages::WireMessage& reply) {
        auto decoded = messages::from_wire(std::move(reply));
        if (!decoded.ok()) {
          out.failure = "malformed reply: " + decoded.error;
        } else if (auto* error = std::get_if<messages::Error>(&*decoded.message)) {
          out.failure = std::string(messages::to_string(error->code)) + ": " + error->message;
        } else {
          out.message = std::move(decoded.message);
        }
      },
      [&](caf::error& e) { out.failure = self->home_system().render(e); });
  return out;
}

}  // namespace

std::optional<messages::Message> ask(caf::scoped_actor& self, const caf::actor& to, caf::message request,
                                     std::chrono::milliseconds timeout, std::string& failure) {
  auto helper = self->home_system().spawn(watched_request, to, std::move(request), timeout);
  AskAnswer answer = await(self, self->request(helper, caf::infinite, ask_atom::value));
  failure = std::move(answer.failure);
  return std::move(answer.message);
}

std::vector<AskAnswer> ask_all(caf::scoped_actor& self, const std::vector<caf::actor>& to,
                               const messages::Message& request, std::chrono::milliseconds timeout) {
  const caf::message message = caf::make_message(messages::to_wire(request));
  using Handle = decltype(self->request(caf::actor(), caf::infinite, ask_atom::value));
  std::vector<Handle> handles;
  for (const auto& target : to) {
    auto helper = self->home_system().spawn(watched_request, target, message, timeout);
    handles.push_back(self->request(helper, caf::infinite, ask_atom::value));
  }
  std::vector<AskAnswer> answers;
  for (auto& handle : handles) answers.push_back(await(self, handle));
  return answers;
}

}  // namespace asteroid::actors
