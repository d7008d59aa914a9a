// The mailbox of an actor whose protocol reads as a sequence (the round
// coordinator: send, wait for the answers, go on): messages taken one at a
// time by what they are, in arrival order, within a deadline; the ones a
// wait does not take stay for later waits (a selective receive).
//
// Two kinds: a ScopedMailbox is a scoped_actor's (a caller's thread waits
// in it: tools, tests); a job's coordinator reads the mailbox of its host
// actor (actors/fiber_host.h), an event-based actor that runs the protocol
// as a continuation: a wait suspends it and returns the actor to its
// mailbox, whose next message resumes it, so no thread blocks on a round.
// Either way, a status request (status_atom) to the actor is answered
// whenever the protocol waits, from what `answer_status` was given.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/fwd.hpp>
#include <caf/local_actor.hpp>
#include <caf/message.hpp>
#include <caf/message_handler.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <chrono>
#include <deque>
#include <functional>
#include <string>

namespace asteroid::actors {

class Mailbox {
 public:
  virtual ~Mailbox() = default;

  // Applies `handler` to the first message it matches, waiting at most
  // `wait` for one; false when none came in time. The messages it does not
  // match stay, in order, for later calls. During the handler, sender() is
  // that message's sender.
  bool receive(caf::message_handler& handler, std::chrono::milliseconds wait);
  const caf::actor_addr& sender() const { return sender_; }

  // The actor whose mailbox this is: what it sends comes from it, and
  // whoever answers sends to it. Use it only from the protocol's thread.
  virtual caf::local_actor* self() = 0;
  caf::actor handle() { return caf::actor_cast<caf::actor>(self()); }
  caf::actor_system& system() { return self()->home_system(); }
  template <class Dest, class... Ts>
  void send(const Dest& to, Ts&&... xs) {
    caf::send_as(handle(), to, std::forward<Ts>(xs)...);
  }

  // Status requests are answered with `status()` from now on (before: "{}").
  void answer_status(std::function<std::string()> status) { status_ = std::move(status); }

 protected:
  struct Letter {
    caf::message content;
    caf::actor_addr sender;
  };
  // Waits for the next message until `deadline` and appends it to `kept`;
  // false when the deadline passed first.
  virtual bool await(std::chrono::steady_clock::time_point deadline) = 0;
  std::string status() const { return status_ ? status_() : std::string("{}"); }
  std::deque<Letter> kept_;  // arrived, not yet taken

 private:
  caf::actor_addr sender_;
  std::function<std::string()> status_;
};

// The mailbox of a scoped actor; the calling thread waits in receive().
class ScopedMailbox : public Mailbox {
 public:
  explicit ScopedMailbox(caf::actor_system& system) : self_(system) {}
  caf::local_actor* self() override { return self_.ptr(); }

 private:
  bool await(std::chrono::steady_clock::time_point deadline) override;
  caf::scoped_actor self_;
};

}  // namespace asteroid::actors
