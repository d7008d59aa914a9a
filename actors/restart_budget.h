// The device supervisor's rule (the node restarts a stage actor of its own
// that failed: actors/node.h): a failed stage actor is restarted unless the
// node already restarted `max_restarts` within the last `window`; then it
// gives up and the job supervisor hears of it as the loss of the device
// (what keeps failing here is better left out of the plan). Pure: the
// caller gives the time.
#pragma once

#include <chrono>
#include <deque>
#include <string>

namespace asteroid::actors {

class RestartBudget {
 public:
  using Clock = std::chrono::steady_clock;

  RestartBudget(size_t max_restarts, Clock::duration window) : max_(max_restarts), window_(window) {}

  // Whether a failure at `now` is restarted; a restart counts against the
  // budget for `window` from then.
  bool take(Clock::time_point now) {
    while (!restarts_.empty() && now - restarts_.front() >= window_) restarts_.pop_front();
    if (restarts_.size() >= max_) return false;
    restarts_.push_back(now);
    return true;
  }

  // Why take() refused ("3 restarts within 60 s").
  std::string exhausted() const {
    return std::to_string(max_) + " restart(s) within " +
           std::to_string(std::chrono::duration_cast<std::chrono::seconds>(window_).count()) + " s";
  }

 private:
  size_t max_;
  Clock::duration window_;
  std::deque<Clock::time_point> restarts_;  // within the window, oldest first
};

}  // namespace asteroid::actors
