#include "actors/round_ledger.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace asteroid::actors {

void RoundLedger::restart_after(std::optional<uint64_t> committed) {
  committed_ = committed;
  if (last_committed_report_ && (!committed || last_committed_report_->round != *committed))
    last_committed_report_.reset();
  round_ = next_start_ = committed ? *committed + 1 : 0;
  in_flight_.clear();
  stepped_.clear();
  last_done_.reset();
  replica_asked_.reset();
  replica_waiting_.clear();
  next_replica_at_ = {};
  replica_round_ = committed;
}

std::vector<uint64_t> RoundLedger::start_due(Clock::time_point now) {
  std::vector<uint64_t> started;
  for (; next_start_ <= round_ + rules_.rounds_ahead && next_start_ < rules_.end_round; ++next_start_) {
    in_flight_[next_start_] = Progress{now, {}, 0, 0, 0};
    started.push_back(next_start_);
  }
  return started;
}

void RoundLedger::member_done(uint64_t round, uint32_t stage, uint32_t member, double loss_sum, uint32_t samples,
                              uint32_t correct) {
  auto it = in_flight_.find(round);
  if (it == in_flight_.end() || !it->second.done.insert({stage, member}).second) return;
  it->second.loss_sum += loss_sum;
  it->second.samples += samples;
  it->second.correct += correct;
}

size_t RoundLedger::done_count() const {
  auto it = in_flight_.find(round_);
  return it == in_flight_.end() ? 0 : it->second.done.size();
}

std::set<std::pair<uint32_t, uint32_t>> RoundLedger::done_members() const {
  auto it = in_flight_.find(round_);
  return it == in_flight_.end() ? std::set<std::pair<uint32_t, uint32_t>>{} : it->second.done;
}

RoundReport RoundLedger::finish(Clock::time_point now, double batch) {
  auto it = in_flight_.find(round_);
  if (it == in_flight_.end()) throw std::logic_error("round " + std::to_string(round_) + " is not in flight");
  const Progress progress = std::move(it->second);
  in_flight_.erase(it);
  RoundReport report;
  report.round = round_;
  report.loss = progress.loss_sum / batch;
  report.samples = progress.samples;
  report.correct = progress.correct;
  // With rounds started ahead, a round's time runs from when the one before
  // it finished (or its own start, if later) to when it finished.
  const auto from = last_done_ ? std::max(*last_done_, progress.started) : progress.started;
  report.ms = std::chrono::duration<double, std::milli>(now - from).count();
  last_done_ = now;
  longest_round_ms_ = std::max(longest_round_ms_, report.ms);
  stepped_[round_] = report;
  ++round_;
  return report;
}

RoundLedger::Actions RoundLedger::advance(const std::set<uint32_t>& holders, bool now, Clock::time_point time) {
  Actions actions;
  while (!stepped_.empty() && (holders.empty() || (replica_round_ && stepped_.begin()->first <= *replica_round_))) {
    actions.commit = stepped_.begin()->first;
    last_committed_report_ = stepped_.begin()->second;
    newly_committed_.push_back(stepped_.begin()->second);
    stepped_.erase(stepped_.begin());
  }
  if (actions.commit) committed_ = actions.commit;
  if (holders.empty() || replica_asked_ || stepped_.empty()) return actions;
  const uint64_t newest = stepped_.rbegin()->first;
  const uint64_t since = replica_round_ ? newest - *replica_round_ : newest + 1;
  if (!now && !commit_point_waits() && (since < rules_.replicate_every || time < next_replica_at_)) return actions;
  actions.replicate = newest;
  replica_waiting_ = holders;
  replica_asked_ = newest;
  replica_asked_at_ = time;
  return actions;
}

bool RoundLedger::replica_stored(uint32_t stage, uint64_t round, Clock::time_point now) {
  if (!replica_asked_ || round != *replica_asked_) return false;
  replica_waiting_.erase(stage);
  if (!replica_waiting_.empty()) return false;
  replica_round_ = replica_asked_;
  replica_asked_.reset();
  // The next replica may keep at most `replica_link_share` of the links and
  // CPUs it crosses: it waits d (1 - share) / share after this one's d.
  const double share = std::clamp(rules_.replica_link_share, 1e-3, 1.0);
  const auto took = now - replica_asked_at_;
  next_replica_at_ = now + std::chrono::duration_cast<Clock::duration>(took * ((1 - share) / share));
  return true;
}

// A stepped round not yet covered by a replica that the job wants
// committed at once (commit_every).
bool RoundLedger::commit_point_waits() const {
  if (rules_.commit_every == 0) return false;
  for (auto it = stepped_.upper_bound(replica_round_ ? *replica_round_ : 0); it != stepped_.end(); ++it) {
    if ((!replica_round_ || it->first > *replica_round_) && (it->first + 1) % rules_.commit_every == 0) return true;
  }
  return false;
}

size_t RoundLedger::lag_limit() const {
  return static_cast<size_t>(std::max<uint64_t>(rules_.max_uncommitted_rounds, rules_.replicate_every + 1));
}

std::chrono::milliseconds RoundLedger::stall_limit(double predicted_round_ms, std::chrono::milliseconds timeout) const {
  using std::chrono::milliseconds;
  auto times = [](double factor, double ms) { return milliseconds(static_cast<int64_t>(factor * ms)); };
  if (longest_round_ms_ > 0) return std::min(timeout, std::max(milliseconds(20000), times(10, longest_round_ms_)));
  if (predicted_round_ms > 0) return std::min(timeout, std::max(milliseconds(60000), times(100, predicted_round_ms)));
  return timeout;
}

}  // namespace asteroid::actors
