#include "apps/service/job_watch.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace asteroid::apps::service {
namespace fs = std::filesystem;

namespace {

nlohmann::json read_json_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return nullptr;
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    return nullptr;  // being replaced: the next refresh reads it
  }
}

}  // namespace

JobWatch::JobWatch(std::string run_dir) : run_dir_(std::move(run_dir)) {}

void JobWatch::reset() {
  offset_ = 0;
  partial_.clear();
  rounds_ = samples_ = 0;
  recent_.clear();
  events_.clear();
  counts_.clear();
  recoveries_.clear();
  failure_at_.reset();
}

void JobWatch::refresh() {
  const fs::path metrics = fs::path(run_dir_) / "metrics.jsonl";
  struct stat st {};
  if (::stat(metrics.c_str(), &st) == 0) {
    if (static_cast<uint64_t>(st.st_ino) != inode_ || static_cast<uint64_t>(st.st_size) < offset_) {
      reset();
      inode_ = st.st_ino;
    }
    std::ifstream in(metrics, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(offset_));
    std::string chunk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    offset_ += chunk.size();
    partial_ += chunk;
    size_t start = 0, end;
    while ((end = partial_.find('\n', start)) != std::string::npos) {
      const std::string line = partial_.substr(start, end - start);
      start = end + 1;
      try {
        take(nlohmann::json::parse(line));
      } catch (const nlohmann::json::exception&) {
        // a line of another format: skipped
      }
    }
    partial_.erase(0, start);
  }
  if (auto s = read_json_file(fs::path(run_dir_) / "status.json"); !s.is_null()) status_ = std::move(s);
  if (summary_.is_null()) summary_ = read_json_file(fs::path(run_dir_) / "summary.json");
  if (plan_file_.is_null()) plan_file_ = read_json_file(fs::path(run_dir_) / "plan.json");
}

void JobWatch::take(const nlohmann::json& line) {
  if (!line.is_object()) return;
  if (line.contains("event")) {
    JobEvent e;
    e.kind = line.value("event", "");
    e.text = line.value("text", "");
    e.unix_s = line.value("unix_s", 0.0);
    if (line.contains("devices") && line["devices"].is_array()) {
      for (const auto& d : line["devices"]) {
        if (d.is_string()) e.devices.push_back(d.get<std::string>());
      }
    }
    auto it = std::find_if(counts_.begin(), counts_.end(), [&](const auto& c) { return c.first == e.kind; });
    if (it == counts_.end()) {
      counts_.emplace_back(e.kind, 1);
    } else {
      ++it->second;
    }
    if (e.kind == "failure" && !failure_at_) failure_at_ = e.unix_s;
    if (e.kind == "device_speed") return;  // counted, not kept: the status has the speeds
    events_.push_back(std::move(e));
    if (events_.size() > kRecentEvents) events_.pop_front();
    return;
  }
  if (!line.contains("round") || !line.contains("loss")) return;
  RoundPoint p;
  p.round = line.value("round", uint64_t{0});
  p.loss = line.value("loss", 0.0);
  p.ms = line.value("ms", 0.0);
  p.unix_s = line.value("unix_s", 0.0);
  p.samples = line.value("samples", 0u);
  ++rounds_;
  samples_ += p.samples;
  if (failure_at_ && p.unix_s > 0) {
    recoveries_.push_back(std::max(0.0, p.unix_s - *failure_at_));
    failure_at_.reset();
  }
  recent_.push_back(p);
  if (recent_.size() > kRecentRounds) recent_.pop_front();
}

std::optional<RoundPoint> JobWatch::last() const {
  if (recent_.empty()) return std::nullopt;
  return recent_.back();
}

double JobWatch::samples_per_s() const {
  if (recent_.size() < 2) return 0;
  // Rounds commit in bursts (several at once when their replicas arrive):
  // the window reaches back 5 s of commits, or to the oldest round kept.
  const double end = recent_.back().unix_s;
  size_t from = recent_.size() - 1;
  while (from > 0 && end - recent_[from].unix_s < 5.0) --from;
  const double seconds = end - recent_[from].unix_s;
  if (seconds <= 0) return 0;
  double samples = 0;
  for (size_t i = from + 1; i < recent_.size(); ++i) samples += recent_[i].samples;
  return samples / seconds;
}

uint64_t JobWatch::count(const std::string& event_kind) const {
  for (const auto& [kind, n] : counts_) {
    if (kind == event_kind) return n;
  }
  return 0;
}

nlohmann::json JobWatch::plan() const {
  if (status_.is_object() && status_.contains("plan")) return status_["plan"];
  return plan_file_;
}

}  // namespace asteroid::apps::service
