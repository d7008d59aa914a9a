// What a served job is doing, read from the files its `asteroid train`
// writes into its run folder while it runs: metrics.jsonl (a line per
// committed round, a line per event: docs/default-job.md), status.json
// (the job supervisor's newest status, distributed_training.h) and, at the
// end, summary.json. refresh() reads only what was appended since the last
// call (whole lines), and starts over when the file was replaced (a
// resumed job trims the rounds after its checkpoint).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

namespace asteroid::apps::service {

struct RoundPoint {
  uint64_t round = 0;
  double loss = 0, ms = 0, unix_s = 0;
  uint32_t samples = 0;
};

struct JobEvent {
  std::string kind, text;
  double unix_s = 0;
  std::vector<std::string> devices;
};

class JobWatch {
 public:
  static constexpr size_t kRecentRounds = 300, kRecentEvents = 200;

  explicit JobWatch(std::string run_dir);
  void refresh();

  const std::string& run_dir() const { return run_dir_; }
  uint64_t rounds() const { return rounds_; }  // committed rounds logged
  uint64_t samples() const { return samples_; }
  std::optional<RoundPoint> last() const;
  // Samples per second of the rounds committed in the last 5 s of commits
  // (or since the oldest round kept); 0 before two rounds.
  double samples_per_s() const;
  const std::deque<RoundPoint>& recent() const { return recent_; }
  // The latest events, without the periodic device_speed lines (counted).
  const std::deque<JobEvent>& events() const { return events_; }
  uint64_t count(const std::string& event_kind) const;
  // Seconds from each failure to the first round committed after it.
  const std::vector<double>& recovery_seconds() const { return recoveries_; }
  // The newest status.json and summary.json (null until written).
  const nlohmann::json& status() const { return status_; }
  const nlohmann::json& summary() const { return summary_; }
  // The plan in force: the status's, else the run folder's plan.json.
  nlohmann::json plan() const;

 private:
  void reset();
  void take(const nlohmann::json& line);
  std::string run_dir_;
  uint64_t offset_ = 0, inode_ = 0;
  std::string partial_;
  uint64_t rounds_ = 0, samples_ = 0;
  std::deque<RoundPoint> recent_;
  std::deque<JobEvent> events_;
  std::vector<std::pair<std::string, uint64_t>> counts_;
  std::vector<double> recoveries_;
  std::optional<double> failure_at_;  // a failure not yet followed by a commit
  nlohmann::json status_, summary_, plan_file_;
};

}  // namespace asteroid::apps::service
