// One envelope to an actor and one envelope back, within a deadline: how
// every request across processes is made (CAF 0.17 never fails a request to
// a dead actor on its own, CAF_NOTES.md section 4).
#pragma once

#include <caf/fwd.hpp>

#include <chrono>
#include <optional>
#include <string>

#include "messages/envelope.h"

namespace asteroid::actors {

// The reply, or nullopt with `failure` saying why: the deadline passed (or
// another CAF error), the reply did not decode, or it was an error message
// (its code and text).
std::optional<messages::Message> ask(caf::scoped_actor& self, const caf::actor& to, const messages::Message& request,
                                     std::chrono::milliseconds timeout, std::string& failure);

}  // namespace asteroid::actors
