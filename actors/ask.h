// One envelope to an actor and one envelope back, within a deadline: how
// every request across processes is made. CAF 0.17 never fails a request to
// a dead actor on its own (CAF_NOTES.md section 4), so the request is made
// by a short-lived helper actor that also monitors the target: a target
// that goes down (a killed process: about a millisecond after the kill)
// fails the request at once instead of at its deadline. A frozen target
// never goes down: an asker that hears the heartbeat monitor's verdicts
// passes a LossHandler, and a verdict it cares about ends the wait at once.
#pragma once

#include <caf/fwd.hpp>
#include <caf/message.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "actors/mailbox.h"
#include "messages/envelope.h"

namespace asteroid::actors {

// Called, while answers are awaited, with every device the heartbeat monitor
// reports lost to the asker (lost_atom in its mailbox, which the wait then
// consumes: the handler must remember it). True abandons every answer still
// awaited: each fails with "abandoned: device 'X' stopped answering
// heartbeats"; their replies come later as (ask_reply_atom, ...), which the
// asker's own receive loop should drop (a Mailbox keeps unmatched
// messages).
using LossHandler = std::function<bool(const std::string& device)>;

// The reply, or nullopt with `failure` saying why: the target went down,
// the deadline passed (or another CAF error), the reply did not decode, it
// was an error message (its code and text), or `on_lost` abandoned it.
std::optional<messages::Message> ask(Mailbox& self, const caf::actor& to, const messages::Message& request,
                                     std::chrono::milliseconds timeout, std::string& failure,
                                     const LossHandler& on_lost = {});
// The same for a request of several values (an envelope and actor handles,
// as a stage assignment) whose answer is one envelope. The target sees the
// helper as the sender: whatever it must know of the asker goes in `request`.
std::optional<messages::Message> ask(Mailbox& self, const caf::actor& to, caf::message request,
                                     std::chrono::milliseconds timeout, std::string& failure,
                                     const LossHandler& on_lost = {});

// One request to several actors at once (each through its own helper, so
// the slowest costs its deadline once, not the sum); the answers in the
// order of `to`.
struct AskAnswer {
  std::optional<messages::Message> message;  // nullopt: see failure
  std::string failure;
};
std::vector<AskAnswer> ask_all(Mailbox& self, const std::vector<caf::actor>& to,
                               const messages::Message& request, std::chrono::milliseconds timeout,
                               const LossHandler& on_lost = {});

}  // namespace asteroid::actors
