#include "apps/service/job_queue.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "compute/durable_file.h"

namespace asteroid::apps::service {
namespace fs = std::filesystem;

namespace {
constexpr const char* kStateNames[] = {"queued", "running", "finished", "failed", "cancelled"};
}

const char* to_string(JobState state) { return kStateNames[static_cast<int>(state)]; }

JobState job_state_from_name(const std::string& name) {
  for (int i = 0; i < 5; ++i) {
    if (name == kStateNames[i]) return static_cast<JobState>(i);
  }
  throw std::invalid_argument("unknown job state '" + name + "'");
}

bool is_final(JobState state) { return state != JobState::queued && state != JobState::running; }

nlohmann::json Job::to_json() const {
  return {{"id", id},
          {"spec", spec},
          {"state", to_string(state)},
          {"submitted_s", submitted_s},
          {"started_s", started_s},
          {"ended_s", ended_s},
          {"starts", starts},
          {"cancel_requested", cancel_requested},
          {"error", error},
          {"result", result},
          {"pid", pid},
          {"pid_start", pid_start}};
}

Job Job::from_json(const nlohmann::json& j) {
  Job job;
  try {
    job.id = j.at("id").get<std::string>();
    job.spec = j.at("spec");
    job.state = job_state_from_name(j.at("state").get<std::string>());
    job.submitted_s = j.value("submitted_s", 0.0);
    job.started_s = j.value("started_s", 0.0);
    job.ended_s = j.value("ended_s", 0.0);
    job.starts = j.value("starts", 0);
    job.cancel_requested = j.value("cancel_requested", false);
    job.error = j.value("error", "");
    job.result = j.value("result", nlohmann::json::object());
    job.pid = j.value("pid", 0);
    job.pid_start = j.value("pid_start", 0ull);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("job record: ") + e.what());
  }
  job.request = parse_job_spec(job.spec);
  return job;
}

JobQueue::JobQueue(std::string state_dir) : dir_(std::move(state_dir)) {
  fs::create_directories(fs::path(dir_) / "jobs");
  for (const auto& entry : fs::directory_iterator(fs::path(dir_) / "jobs")) {
    const fs::path record = entry.path() / "job.json";
    if (!fs::is_regular_file(record)) continue;
    try {
      std::ifstream in(record);
      Job job = Job::from_json(nlohmann::json::parse(in));
      if (job.id != entry.path().filename().string()) throw std::invalid_argument("its id is not its folder's name");
      jobs_[job.id] = std::move(job);
    } catch (const std::exception& e) {
      skipped.push_back(record.string() + ": " + e.what());
    }
  }
  // Past every job folder, loaded or not: a new job never takes the
  // folder of one whose record did not load.
  for (const auto& entry : fs::directory_iterator(fs::path(dir_) / "jobs")) {
    unsigned long long n = 0;
    if (std::sscanf(entry.path().filename().c_str(), "job-%llu", &n) == 1 && n >= next_) next_ = n + 1;
  }
}

std::string JobQueue::job_dir(const std::string& id) const { return (fs::path(dir_) / "jobs" / id).string(); }

const Job& JobQueue::submit(nlohmann::json spec, JobRequest request, double now_s) {
  char id[32];
  do {
    std::snprintf(id, sizeof id, "job-%06llu", static_cast<unsigned long long>(next_++));
  } while (fs::exists(job_dir(id)));
  Job job;
  job.id = id;
  job.spec = std::move(spec);
  job.request = std::move(request);
  job.submitted_s = now_s;
  fs::create_directories(job_dir(job.id));
  save(job);
  return jobs_[job.id] = std::move(job);
}

Job* JobQueue::find(const std::string& id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

void JobQueue::save(const Job& job) const {
  compute::write_file_atomically((fs::path(job_dir(job.id)) / "job.json").string(), job.to_json().dump(2) + "\n",
                                 "job record");
}

std::set<std::string> JobQueue::devices_of(const Job& job, const std::vector<std::string>& cluster) {
  const auto& own = job.request.devices;
  return own.empty() ? std::set<std::string>(cluster.begin(), cluster.end())
                     : std::set<std::string>(own.begin(), own.end());
}

std::vector<std::string> JobQueue::startable(const std::vector<std::string>& cluster) const {
  std::set<std::string> claimed;
  for (const auto& [id, job] : jobs_) {
    if (job.state == JobState::running) {
      const auto d = devices_of(job, cluster);
      claimed.insert(d.begin(), d.end());
    }
  }
  std::vector<std::string> start;
  for (const auto& [id, job] : jobs_) {
    if (job.state != JobState::queued || job.cancel_requested) continue;
    const auto wanted = devices_of(job, cluster);
    bool free = true;
    for (const auto& d : wanted) free = free && !claimed.count(d);
    if (free) start.push_back(id);
    claimed.insert(wanted.begin(), wanted.end());  // started, or waited for: later jobs keep off
  }
  return start;
}

}  // namespace asteroid::apps::service
