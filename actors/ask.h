// One envelope to an actor and one envelope back, within a deadline: how
// every request across processes is made. CAF 0.17 never fails a request to
// a dead actor on its own (CAF_NOTES.md section 4), so the request is made
// by a short-lived helper actor that also monitors the target: a target
// that goes down (a killed process: about a millisecond after the kill)
// fails the request at once instead of at its deadline.
#pragma once

#include <caf/fwd.hpp>
#include <caf/message.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "messages/envelope.h"

namespace asteroid::actors {

// The reply, or nullopt with `failure` saying why: the target went down,
// the deadline passed (or another CAF error), the reply did not decode, or
// it was an error message (its code and text).
std::optional<messages::Message> ask(caf::scoped_actor& self, const caf::actor& to, const messages::Message& request,
                                     std::chrono::milliseconds timeout, std::string& failure);
// The same for a request of several values (an envelope and actor handles,
// as a stage assignment) whose answer is one envelope. The target sees the
// helper as the sender: whatever it must know of the asker goes in `request`.
std::optional<messages::Message> ask(caf::scoped_actor& self, const caf::actor& to, caf::message request,
                                     std::chrono::milliseconds timeout, std::string& failure);

// One request to several actors at once (each through its own helper, so
// the slowest costs its deadline once, not the sum); the answers in the
// order of `to`.
struct AskAnswer {
  std::optional<messages::Message> message;  // nullopt: see failure
  std::string failure;
};
std::vector<AskAnswer> ask_all(caf::scoped_actor& self, const std::vector<caf::actor>& to,
                               const messages::Message& request, std::chrono::milliseconds timeout);

}  // namespace asteroid::actors
