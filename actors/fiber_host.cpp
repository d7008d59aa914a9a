#include "actors/fiber_host.h"

#include <caf/all.hpp>

#include <boost/coroutine2/coroutine.hpp>
#include <boost/coroutine2/fixedsize_stack.hpp>

#include <memory>
#include <optional>

#include "actors/atoms.h"

namespace asteroid::actors {
namespace {

using Coroutine = boost::coroutines2::coroutine<void>;

// The body's stack: as large as a thread's (the body builds JSON, plans,
// and may call into LibTorch).
constexpr size_t kStackBytes = 8u << 20;
// A wait longer than this schedules no wake-up (waits "forever").
constexpr auto kLongestDeadline = std::chrono::hours(1);
// A wake-up already scheduled this close to a wait's deadline serves it
// (the waits of one round share its deadline, each computed anew).
constexpr auto kSameDeadline = std::chrono::milliseconds(2);

class FiberMailbox : public Mailbox {
 public:
  explicit FiberMailbox(caf::event_based_actor* self) : self_(self) {}
  caf::local_actor* self() override { return self_; }

  void deliver(caf::message content, caf::actor_addr sender) { kept_.push_back({std::move(content), std::move(sender)}); }
  std::string status_now() const { return status(); }

  // A wake-up arrived: whether it is the one the body waits for (others
  // were scheduled for earlier waits that a message ended).
  bool woken(uint64_t ticket) {
    if (ticket != ticket_) return false;
    scheduled_.reset();
    return true;
  }

  Coroutine::push_type* yield = nullptr;  // the body's way back to the host

 private:
  // Suspends the body until a message arrives or the deadline passes. A
  // deadline already passed still lets the messages that wait in the
  // host's mailbox arrive first: the wake-up is queued behind them. One
  // wake-up serves the successive waits of one deadline (a round's
  // messages each end a wait), so timers do not pile up.
  bool await(std::chrono::steady_clock::time_point deadline) override {
    const size_t before = kept_.size();
    const auto now = std::chrono::steady_clock::now();
    const auto left = deadline - now;
    const bool scheduled_alike = scheduled_ && *scheduled_ > now && *scheduled_ - deadline < kSameDeadline &&
                                 deadline - *scheduled_ < kSameDeadline;
    if (left <= std::chrono::steady_clock::duration::zero() || !scheduled_alike) {
      ++ticket_;  // what was scheduled before serves no more
      scheduled_.reset();
      if (left <= std::chrono::steady_clock::duration::zero()) {
        self_->send(self_, wake_atom::value, ticket_);
        scheduled_ = now;
      } else if (left < kLongestDeadline) {
        self_->delayed_send(self_, std::chrono::duration_cast<std::chrono::microseconds>(left), wake_atom::value,
                            ticket_);
        scheduled_ = deadline;
      }
    }
    (*yield)();
    return kept_.size() > before;
  }

  caf::event_based_actor* self_;
  uint64_t ticket_ = 0;  // of the wake-up the body waits for
  std::optional<std::chrono::steady_clock::time_point> scheduled_;  // when it comes
};

struct Host {
  Host(caf::event_based_actor* self, std::function<void(Mailbox&)> body) : mailbox(self), body(std::move(body)) {}
  FiberMailbox mailbox;
  std::function<void(Mailbox&)> body;
  std::unique_ptr<Coroutine::pull_type> fiber;  // the body's stack, from its start to its end
  bool done = false;
};

caf::behavior fiber_host(caf::event_based_actor* self, std::function<void(Mailbox&)> body,
                         std::function<void(std::exception_ptr)> ended) {
  auto host = std::make_shared<Host>(self, std::move(body));
  // Starts or resumes the body, which runs until it waits again or ends.
  auto resume = [self, host, ended](bool start) {
    if (host->done || start == static_cast<bool>(host->fiber)) return;  // ended, or not started (yet)
    std::exception_ptr failure;
    try {
      if (start) {
        host->fiber = std::make_unique<Coroutine::pull_type>(boost::coroutines2::fixedsize_stack(kStackBytes),
                                                             [host](Coroutine::push_type& yield) {
                                                               host->mailbox.yield = &yield;
                                                               host->body(host->mailbox);
                                                             });
      } else {
        (*host->fiber)();
      }
      if (*host->fiber) return;  // waiting again
    } catch (...) {
      failure = std::current_exception();
    }
    host->done = true;
    ended(failure);
    self->quit();
  };
  self->set_default_handler([self, host, resume](caf::scheduled_actor*, caf::message_view& x) -> caf::result<caf::message> {
    host->mailbox.deliver(x.move_content_to_message(), caf::actor_cast<caf::actor_addr>(self->current_sender()));
    resume(false);
    return caf::message{};
  });
  self->set_down_handler([host, resume](caf::down_msg& down) {
    auto source = down.source;
    host->mailbox.deliver(caf::make_message(std::move(down)), std::move(source));
    resume(false);
  });
  self->send(self, wake_atom::value, uint64_t{0});  // the start
  return {
      [host](status_atom) -> std::string { return host->mailbox.status_now(); },
      [host, resume](wake_atom, uint64_t ticket) {
        if (ticket == 0) {
          resume(true);
        } else if (host->mailbox.woken(ticket)) {
          resume(false);
        }
      },
  };
}

}  // namespace

caf::actor spawn_fiber_host(caf::local_actor* parent, std::function<void(Mailbox&)> body,
                            std::function<void(std::exception_ptr)> ended) {
  return parent->spawn<caf::monitored>(fiber_host, std::move(body), std::move(ended));
}

}  // namespace asteroid::actors
