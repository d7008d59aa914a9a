// The service's jobs and the rule that starts them. A job is queued,
// running, then finished, failed or cancelled; every change is written to
// its folder (STATE_DIR/jobs/ID/job.json, atomically) before it counts, so
// a service started again on the same folder knows every job as it was.
//
// Start rule (JobQueue::startable): jobs start in submission order; a job
// needs its devices ("devices" of its spec, else the whole cluster) free
// of running jobs. A later job may start before an earlier queued one
// only on devices that earlier job does not wait for, so side-by-side
// jobs never starve one that waits for the whole cluster.
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "apps/service/job_spec.h"

namespace asteroid::apps::service {

enum class JobState { queued, running, finished, failed, cancelled };
const char* to_string(JobState state);
JobState job_state_from_name(const std::string& name);  // throws std::invalid_argument
bool is_final(JobState state);

struct Job {
  std::string id;       // job-000001, ...
  nlohmann::json spec;  // as submitted
  JobRequest request;   // parse_job_spec(spec)
  JobState state = JobState::queued;
  double submitted_s = 0, started_s = 0, ended_s = 0;  // Unix time (0: not yet)
  int starts = 0;       // runs started: 1, plus one per resume after a service restart
  bool cancel_requested = false;
  std::string error;    // failed: why (the run's last error line)
  // At the end: what the run reached ("round", "rounds", "loss",
  // "samples_per_s", "test_accuracy"), for listing it without its files.
  nlohmann::json result = nlohmann::json::object();
  // The running `asteroid train` (0: none), with its start time, so that a
  // service started again never mistakes a recycled pid for it.
  pid_t pid = 0;
  unsigned long long pid_start = 0;
  nlohmann::json to_json() const;
  static Job from_json(const nlohmann::json& j);  // throws std::invalid_argument naming the field
};

class JobQueue {
 public:
  // Loads every job under DIR/jobs (creating DIR/jobs). A job.json that
  // does not parse is skipped with its path in `skipped` (its folder stays).
  explicit JobQueue(std::string state_dir);

  const std::string& state_dir() const { return dir_; }
  std::string job_dir(const std::string& id) const;
  // Accepts a parsed spec; returns the new job's id.
  const Job& submit(nlohmann::json spec, JobRequest request, double now_s);
  Job* find(const std::string& id);
  const std::map<std::string, Job>& jobs() const { return jobs_; }
  // Writes the job's record (call after changing it).
  void save(const Job& job) const;
  // Ids of queued jobs that may start now, in order (the start rule above);
  // `cluster` is every device of the service's cluster.
  std::vector<std::string> startable(const std::vector<std::string>& cluster) const;
  // The devices a job runs on: its spec's, or the whole cluster.
  static std::set<std::string> devices_of(const Job& job, const std::vector<std::string>& cluster);
  std::vector<std::string> skipped;

 private:
  std::string dir_;
  std::map<std::string, Job> jobs_;  // ids sort in submission order
  uint64_t next_ = 1;
};

}  // namespace asteroid::apps::service
