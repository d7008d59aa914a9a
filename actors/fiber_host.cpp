#include "actors/fiber_host.h"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <boost/coroutine2/coroutine.hpp>
#include <boost/coroutine2/fixedsize_stack.hpp>

#include <memory>

#include "actors/atoms.h"

namespace asteroid::actors {
namespace {

using Coroutine = boost::coroutines2::coroutine<void>;

// The body's stack: as large as a thread's (the body builds JSON, plans,
// and may call into LibTorch).
constexpr size_t kStackBytes = 8u << 20;
// A wait longer than this schedules no wake-up (waits "forever").
constexpr auto kLongestDeadline = std::chrono::hours(1);

class FiberMailbox : public Mailbox {
 public:
  explicit FiberMailbox(caf::event_based_actor* self) : self_(self) {}
  caf::local_actor* self() override { return self_; }

  void deliver(caf::message content, caf::actor_addr sender) { kept_.push_back({std::move(content), std::move(sender)}); }
  std::string status_now() const { return status(); }

  Coroutine::push_type* yield = nullptr;  // the body's way back to the host
  uint64_t ticket = 0;                    // the wake-up the body waits for

 private:
  // Suspends the body until a message arrives or the deadline passes. A
  // deadline already passed still lets the messages that wait in the
  // host's mailbox arrive first: the wake-up is queued behind them.
  bool await(std::chrono::steady_clock::time_point deadline) override {
    const size_t before = kept_.size();
    const uint64_t mine = ++ticket;
    const auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero()) {
      self_->send(self_, wake_atom::value, mine);
    } else if (left < kLongestDeadline) {
      self_->delayed_send(self_, std::chrono::duration_cast<std::chrono::microseconds>(left), wake_atom::value, mine);
    }
    (*yield)();
    return kept_.size() > before;
  }

  caf::event_based_actor* self_;
};

struct Host {
  explicit Host(caf::event_based_actor* self) : mailbox(self) {}
  FiberMailbox mailbox;
  std::unique_ptr<Coroutine::pull_type> body;
  bool done = false;
};

caf::behavior fiber_host(caf::event_based_actor* self, std::function<void(Mailbox&)> body,
                         std::function<void(std::exception_ptr)> ended) {
  auto host = std::make_shared<Host>(self);
  // Runs the body until it waits again or ends.
  auto resume = [self, host, ended](bool start, std::function<void(Mailbox&)> first = {}) {
    if (host->done || (!start && (!host->body || !*host->body))) return;
    std::exception_ptr failure;
    try {
      if (start) {
        host->body = std::make_unique<Coroutine::pull_type>(
            boost::coroutines2::fixedsize_stack(kStackBytes), [host, first](Coroutine::push_type& yield) {
              host->mailbox.yield = &yield;
              first(host->mailbox);
            });
      } else {
        (*host->body)();
      }
      if (*host->body) return;  // waiting again
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
      [host, resume, body](wake_atom, uint64_t ticket) {
        if (ticket == 0 && !host->body) {
          resume(true, body);
        } else if (ticket == host->mailbox.ticket) {
          resume(false);
        }
      },
  };
}

}  // namespace

caf::actor spawn_fiber_host(caf::local_actor* parent, std::function<void(Mailbox&)> body,
                            std::function<void(std::exception_ptr)> ended, FiberThread thread) {
  if (thread == FiberThread::scheduled)
    return parent->spawn<caf::monitored>(fiber_host, std::move(body), std::move(ended));
  return parent->spawn<caf::detached + caf::monitored>(fiber_host, std::move(body), std::move(ended));
}

}  // namespace asteroid::actors
