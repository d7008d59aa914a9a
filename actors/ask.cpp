#include "actors/ask.h"

#include <caf/all.hpp>

#include <atomic>
#include <map>

#include "actors/atoms.h"
#include "actors/transport.h"
#include "messages/transport.h"

namespace asteroid::actors {
namespace {

// Makes one request of `to` and sends its answer to `asker` as
// (ask_reply_atom, ticket, reply or error); fails it with the down reason
// when `to` goes down first. Quits after answering.
caf::behavior watched_request(caf::event_based_actor* self, caf::actor to, caf::message request,
                              std::chrono::milliseconds timeout, caf::actor asker, uint64_t ticket) {
  auto answered = std::make_shared<bool>(false);
  auto answer = [self, asker, ticket, answered](auto&& result) {
    if (*answered) return;
    *answered = true;
    self->send(asker, ask_reply_atom::value, ticket, std::forward<decltype(result)>(result));
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
  return {[](ask_reply_atom) {}};  // answers come from the request above
}

std::atomic<uint64_t> next_ticket{1};
constexpr std::chrono::milliseconds kNoDeadline = std::chrono::hours(24);

// Sends every request through its own helper and waits for every answer,
// or until `on_lost` abandons the rest.
std::vector<AskAnswer> ask_each(Mailbox& self, const std::vector<caf::actor>& to,
                                const std::vector<caf::message>& requests, std::chrono::milliseconds timeout,
                                const LossHandler& on_lost) {
  std::vector<AskAnswer> answers(to.size());
  std::map<uint64_t, size_t> awaited;  // ticket -> index
  const auto asker = self.handle();
  for (size_t i = 0; i < to.size(); ++i) {
    const uint64_t ticket = next_ticket++;
    awaited[ticket] = i;
    self.system().spawn(watched_request, to[i], requests[i], timeout, asker, ticket);
  }
  auto take = [&](uint64_t ticket) -> AskAnswer* {
    auto found = awaited.find(ticket);
    if (found == awaited.end()) return nullptr;  // a reply to an abandoned ask
    AskAnswer* answer = &answers[found->second];
    awaited.erase(found);
    return answer;
  };
  auto on_reply = [&](ask_reply_atom, uint64_t ticket, messages::WireMessage& reply) {
    AskAnswer* out = take(ticket);
    if (!out) return;
    auto decoded = messages::from_wire(std::move(reply));
    if (!decoded.ok()) {
      out->failure = "malformed reply: " + decoded.error;
    } else if (auto* error = std::get_if<messages::Error>(&*decoded.message)) {
      out->failure = std::string(messages::to_string(error->code)) + ": " + error->message;
    } else {
      out->message = std::move(decoded.message);
    }
  };
  auto on_error = [&](ask_reply_atom, uint64_t ticket, caf::error& e) {
    if (AskAnswer* out = take(ticket)) out->failure = self.system().render(e);
  };
  std::string abandoned_for;
  auto waiting = [&] { return !awaited.empty() && abandoned_for.empty(); };
  caf::message_handler handler = on_lost ? caf::message_handler{on_reply, on_error,
                                                                 [&](lost_atom, const std::string& device) {
                                                                   if (on_lost(device)) abandoned_for = device;
                                                                 }}
                                         : caf::message_handler{on_reply, on_error};
  // Every helper answers (its request has a deadline): no deadline here.
  while (waiting()) self.receive(handler, kNoDeadline);
  for (const auto& [ticket, index] : awaited) {
    answers[index].failure = "abandoned: device '" + abandoned_for + "' stopped answering heartbeats";
  }
  return answers;
}

}  // namespace

std::optional<messages::Message> ask(Mailbox& self, const caf::actor& to, const messages::Message& request,
                                     std::chrono::milliseconds timeout, std::string& failure,
                                     const LossHandler& on_lost) {
  return ask(self, to, caf::make_message(wire_for(self.system(), to, request)), timeout, failure, on_lost);
}

std::optional<messages::Message> ask(Mailbox& self, const caf::actor& to, caf::message request,
                                     std::chrono::milliseconds timeout, std::string& failure,
                                     const LossHandler& on_lost) {
  AskAnswer answer = std::move(ask_each(self, {to}, {std::move(request)}, timeout, on_lost).front());
  failure = std::move(answer.failure);
  return std::move(answer.message);
}

std::vector<AskAnswer> ask_all(Mailbox& self, const std::vector<caf::actor>& to,
                               const messages::Message& request, std::chrono::milliseconds timeout,
                               const LossHandler& on_lost) {
  std::vector<caf::message> messages;
  for (const auto& target : to) messages.push_back(caf::make_message(wire_for(self.system(), target, request)));
  return ask_each(self, to, std::move(messages), timeout, on_lost);
}

}  // namespace asteroid::actors
