#include "apps/service/prometheus.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <sstream>

namespace asteroid::apps::service {
namespace {

std::string escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

using Labels = std::vector<std::pair<std::string, std::string>>;

// One metric family: HELP and TYPE once, then its samples.
class Family {
 public:
  Family(std::ostringstream& out, std::string name, const char* type, const char* help)
      : out_(out), name_(std::move(name)) {
    out_ << "# HELP " << name_ << ' ' << help << "\n# TYPE " << name_ << ' ' << type << '\n';
  }
  void sample(const Labels& labels, double value, const std::string& suffix = "") {
    out_ << name_ << suffix;
    if (!labels.empty()) {
      out_ << '{';
      for (size_t i = 0; i < labels.size(); ++i)
        out_ << (i ? "," : "") << labels[i].first << "=\"" << escape(labels[i].second) << '"';
      out_ << '}';
    }
    out_ << ' ' << number(value) << '\n';
  }

 private:
  std::ostringstream& out_;
  std::string name_;
};

double num(const nlohmann::json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0;
}

// Per device of a job's status: each entry of status[section] as an object.
void for_devices(const WatchedJob& w, const char* section,
                 const std::function<void(const std::string&, const nlohmann::json&)>& f) {
  const auto& s = w.watch->status();
  if (!s.is_object() || !s.contains(section) || !s[section].is_object()) return;
  for (const auto& [device, value] : s[section].items()) f(device, value);
}

}  // namespace

const std::vector<double>& recovery_buckets() {
  static const std::vector<double> b = {0.5, 1, 2, 5, 10, 30, 60, 120, 300};
  return b;
}

std::string prometheus_text(const std::map<std::string, Job>& all, const std::vector<WatchedJob>& watched) {
  std::ostringstream out;
  {
    Family f(out, "asteroid_jobs", "gauge", "Jobs the service knows, by state.");
    std::map<std::string, int> by_state;
    for (JobState s : {JobState::queued, JobState::running, JobState::finished, JobState::failed, JobState::cancelled})
      by_state[to_string(s)] = 0;
    for (const auto& [id, job] : all) ++by_state[to_string(job.state)];
    for (const auto& [state, n] : by_state) f.sample({{"state", state}}, n);
  }
  auto per_job = [&](const char* name, const char* type, const char* help,
                     const std::function<void(Family&, const WatchedJob&, const Labels&)>& each) {
    Family f(out, name, type, help);
    for (const auto& w : watched) each(f, w, {{"job", w.job->id}});
  };
  per_job("asteroid_rounds_committed_total", "counter", "Rounds committed (logged in the job's metrics).",
          [](Family& f, const WatchedJob& w, const Labels& l) { f.sample(l, w.watch->rounds()); });
  per_job("asteroid_samples_total", "counter", "Training samples of the committed rounds.",
          [](Family& f, const WatchedJob& w, const Labels& l) { f.sample(l, w.watch->samples()); });
  per_job("asteroid_samples_per_second", "gauge", "Throughput of the rounds committed in the last 5 s of commits.",
          [](Family& f, const WatchedJob& w, const Labels& l) { f.sample(l, w.watch->samples_per_s()); });
  per_job("asteroid_loss", "gauge", "Training loss of the last committed round.",
          [](Family& f, const WatchedJob& w, const Labels& l) {
            if (auto p = w.watch->last()) f.sample(l, p->loss);
          });
  per_job("asteroid_round_duration_seconds", "gauge", "Duration of the last committed round.",
          [](Family& f, const WatchedJob& w, const Labels& l) {
            if (auto p = w.watch->last()) f.sample(l, p->ms / 1e3);
          });
  struct DeviceTime {
    const char* name;
    const char* help;
    const char* key;
  };
  for (const DeviceTime& t : {DeviceTime{"asteroid_device_compute_seconds_total", "Forward and backward time of a device's stage members.", "compute_s"},
                              DeviceTime{"asteroid_device_transfer_seconds_total", "Time a device's members spent sending activations and gradients.", "send_s"},
                              DeviceTime{"asteroid_device_all_reduce_seconds_total", "Time a device's members spent in their group's all-reduce.", "all_reduce_s"}}) {
    per_job(t.name, "counter", t.help, [&](Family& f, const WatchedJob& w, const Labels& l) {
      for_devices(w, "device_times", [&](const std::string& device, const nlohmann::json& v) {
        Labels dl = l;
        dl.emplace_back("device", device);
        f.sample(dl, num(v, t.key));
      });
    });
  }
  per_job("asteroid_device_wait_seconds_total", "counter",
          "Time of the committed rounds a device in use spent neither computing nor transferring.",
          [](Family& f, const WatchedJob& w, const Labels& l) {
            for_devices(w, "device_times", [&](const std::string& device, const nlohmann::json& v) {
              Labels dl = l;
              dl.emplace_back("device", device);
              f.sample(dl, std::max(0.0, num(v, "in_rounds_s") - num(v, "compute_s") - num(v, "send_s") -
                                             num(v, "all_reduce_s")));
            });
          });
  per_job("asteroid_device_sent_bytes_total", "counter",
          "Bytes a device's stage members put on the wire, by the codec of the tensors sent.",
          [](Family& f, const WatchedJob& w, const Labels& l) {
            for_devices(w, "device_times", [&](const std::string& device, const nlohmann::json& v) {
              if (!v.contains("sent_bytes") || !v["sent_bytes"].is_object()) return;
              for (const auto& [codec, bytes] : v["sent_bytes"].items()) {
                Labels dl = l;
                dl.emplace_back("device", device);
                dl.emplace_back("codec", codec);
                f.sample(dl, bytes.is_number() ? bytes.get<double>() : 0);
              }
            });
          });
  per_job("asteroid_stage_link_codec_info", "gauge",
          "The codec of the activations and gradients between a stage and the next, by the plan in force.",
          [](Family& f, const WatchedJob& w, const Labels& l) {
            const auto plan = w.watch->plan();
            if (!plan.is_object() || !plan.contains("stages") || !plan["stages"].is_array()) return;
            for (size_t s = 0; s + 1 < plan["stages"].size(); ++s) {
              const auto& stage = plan["stages"][s];
              Labels sl = l;
              sl.emplace_back("stage", std::to_string(s));
              sl.emplace_back("codec", stage.value("to_next_codec", "fp32"));
              f.sample(sl, 1);
            }
          });
  per_job("asteroid_device_up", "gauge", "1 while a device answers (in use or idle), 0 when lost or cut off.",
          [](Family& f, const WatchedJob& w, const Labels& l) {
            for_devices(w, "devices", [&](const std::string& device, const nlohmann::json& v) {
              Labels dl = l;
              dl.emplace_back("device", device);
              const std::string health = v.is_string() ? v.get<std::string>() : "";
              f.sample(dl, health == "lost" || health == "partitioned" ? 0 : 1);
            });
          });
  per_job("asteroid_device_speed_scale", "gauge",
          "A device's learned compute time against its profile's (2: twice as slow).",
          [](Family& f, const WatchedJob& w, const Labels& l) {
            for_devices(w, "device_scale", [&](const std::string& device, const nlohmann::json& v) {
              Labels dl = l;
              dl.emplace_back("device", device);
              if (v.is_number()) f.sample(dl, v.get<double>());
            });
          });
  {
    Family f(out, "asteroid_heartbeat_round_trip_seconds", "summary", "Heartbeat round trips to each device.");
    for (const auto& w : watched) {
      for_devices(w, "heartbeat_round_trips", [&](const std::string& device, const nlohmann::json& v) {
        const Labels l = {{"job", w.job->id}, {"device", device}};
        f.sample(l, num(v, "sum_ms") / 1e3, "_sum");
        f.sample(l, num(v, "count"), "_count");
      });
    }
  }
  struct EventCount {
    const char* name;
    const char* help;
    const char* kind;
  };
  for (const EventCount& e : {EventCount{"asteroid_failures_total", "Failures detected (a device lost, a stage failed, a round stalled).", "failure"},
                              EventCount{"asteroid_recoveries_total", "Recoveries that re-planned and replayed (or restarted in place).", "replan"},
                              EventCount{"asteroid_adaptations_total", "Plan switches because devices' speeds drifted.", "adapt"},
                              EventCount{"asteroid_rejoins_total", "Devices admitted again.", "rejoin"},
                              EventCount{"asteroid_checkpoints_total", "Checkpoints written.", "checkpoint"}}) {
    per_job(e.name, "counter", e.help,
            [&](Family& f, const WatchedJob& w, const Labels& l) { f.sample(l, w.watch->count(e.kind)); });
  }
  {
    Family f(out, "asteroid_recovery_seconds", "histogram", "From a failure to the first round committed after it.");
    for (const auto& w : watched) {
      const auto& times = w.watch->recovery_seconds();
      double sum = 0;
      for (double t : times) sum += t;
      for (double bound : recovery_buckets()) {
        const auto n = std::count_if(times.begin(), times.end(), [&](double t) { return t <= bound; });
        f.sample({{"job", w.job->id}, {"le", number(bound)}}, static_cast<double>(n), "_bucket");
      }
      f.sample({{"job", w.job->id}, {"le", "+Inf"}}, static_cast<double>(times.size()), "_bucket");
      f.sample({{"job", w.job->id}}, sum, "_sum");
      f.sample({{"job", w.job->id}}, static_cast<double>(times.size()), "_count");
    }
  }
  per_job("asteroid_dropped_messages_total", "counter",
          "Messages the coordinator did not take (malformed, or not from a member of the deployment).",
          [](Family& f, const WatchedJob& w, const Labels& l) { f.sample(l, num(w.watch->status(), "dropped_messages")); });
  return out.str();
}

}  // namespace asteroid::apps::service
