// The host of a protocol that reads as a sequence (a job's supervisor and
// its round coordinator): an event-based actor that runs `body` as its
// continuation. The body waits through the host's Mailbox (actors/mailbox.h);
// a wait suspends the body and returns the host to its mailbox, and the next
// message (or the wait's deadline: a wake-up the host sends itself, one for
// the successive waits of one deadline) resumes it. So the body's code stays one readable sequence (deploy, run a round,
// recover, ...) while no thread blocks on it: between two messages the host
// holds no thread, and it answers status requests (status_atom) from its
// behaviour while the body waits.
//
// The body runs on a stack of its own (Boost.Coroutine2), on the
// scheduler's threads: it must wait only through its mailbox (asks,
// connections and remote spawns do: actors/ask.h, actors/transport.h), so
// hundreds of hosts waiting hold no thread at all
// (FiberHost.ManyHostsWaitingHoldNoThread). What it computes or blocks on
// otherwise (a job's callbacks, e.g. a fault injector starting a process)
// holds one scheduler thread meanwhile: keep it short.
#pragma once

#include <caf/fwd.hpp>

#include <exception>
#include <functional>

#include "actors/mailbox.h"

namespace asteroid::actors {

// Spawns the host (monitored by `parent`) and starts `body` at once. When
// the body returns or throws, `ended` gets what it threw (nullptr when it
// returned), on the host's thread, and the host quits.
caf::actor spawn_fiber_host(caf::local_actor* parent, std::function<void(Mailbox&)> body,
                            std::function<void(std::exception_ptr)> ended);

}  // namespace asteroid::actors
