#include "apps/distributed_training.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <stdexcept>

#include "actors/optimizer_spec.h"
#include "actors/system_config.h"
#include "actors/trace.h"
#include "compute/dataset.h"
#include "compute/durable_file.h"
#include "compute/evaluate.h"
#include "compute/model_zoo.h"
#include "compute/profiler.h"
#include "compute/torchscript_model.h"
#include "compute/training_log.h"
#include "compute/weights_io.h"
#include "messages/tensor_codec.h"
#include "apps/testbed/emulated_cluster.h"
#include "planner/json_io.h"
#include "planner/replan.h"
#include "supervision/job_actor.h"
#include "supervision/checkpoint.h"
#include "supervision/node_states.h"
#include "supervision/stage_states.h"

namespace asteroid::apps {
namespace {

void check_plan(const planner::Plan& plan, const compute::TrainOptions& o) {
  if (plan.batch != o.batch) {
    throw std::invalid_argument("the plan is for mini-batches of " + std::to_string(plan.batch) +
                                " samples but --batch is " + std::to_string(o.batch));
  }
  const int layers = compute::layer_count(o.model);
  if (plan.stages.empty() || plan.stages.front().begin != 0 || plan.stages.back().end != layers) {
    throw std::invalid_argument("the plan's stages must cover layers [0, " + std::to_string(layers) + ") of " +
                                o.model);
  }
}

actors::MemberNames member_names(const planner::Plan& plan) {
  actors::MemberNames names;
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    for (size_t m = 0; m < plan.stages[s].devices.size(); ++m) {
      names[{static_cast<uint32_t>(s), static_cast<uint32_t>(m)}] = plan.stages[s].devices[m].id;
    }
  }
  return names;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Wall-clock time, to line metrics up with events outside the job (faults).
double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// DistributedOptions::status_path: the newest status, replaced by rename
// (a reader sees a whole file); not synced to disk, it is rewritten often
// and only describes the live job.
class StatusFile {
 public:
  explicit StatusFile(std::string path) : path_(std::move(path)) {}
  void update(const std::string& status, bool now = false) {
    if (path_.empty()) return;
    const auto phase_at = status.find("\"phase\":\"");
    std::string phase = phase_at == std::string::npos ? "" : status.substr(phase_at, 24);
    const auto t = std::chrono::steady_clock::now();
    if (!now && phase == phase_ && t - written_ < std::chrono::milliseconds(200)) return;
    phase_ = std::move(phase);
    written_ = t;
    const std::string tmp = path_ + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << status << '\n';
      if (!out) return;  // a full disk costs the watcher its view, not the job
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path_, ec);
  }

 private:
  std::string path_, phase_;
  std::chrono::steady_clock::time_point written_{};
};

nlohmann::json failures_json(const std::vector<supervision::FailureRecord>& failures) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& f : failures) {
    out.push_back({{"devices", f.devices},
                   {"kind", f.kind},
                   {"round", f.round},
                   {"resumed_from", f.resumed_from},
                   {"detected_s", f.detected_s},
                   {"recovered_s", f.recovered_s},
                   {"recovery_ms", f.recovery_ms()},
                   {"replan", f.replan},
                   {"interrupted_by", f.interrupted_by},
                   {"layers_moved", f.layers_moved},
                   {"bytes_moved", f.bytes_moved},
                   {"plan", f.plan_summary},
                   {"phases_ms",
                    {{"abort", f.abort_ms}, {"states", f.states_ms}, {"plan", f.plan_ms}, {"redeploy", f.redeploy_ms}}}});
  }
  return out;
}

}  // namespace

std::map<uint64_t, planner::Plan> load_plan_switches(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot read the plan switches '" + path + "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(path + ": not JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("switches") || !j["switches"].is_array())
    throw std::invalid_argument(path + ": expected {\"switches\": [{\"round\": R, \"plan\": {...}}, ...]}");
  std::map<uint64_t, planner::Plan> out;
  for (size_t i = 0; i < j["switches"].size(); ++i) {
    const auto& e = j["switches"][i];
    const std::string where = path + ": switches[" + std::to_string(i) + "]";
    if (!e.is_object() || !e.contains("round") || !e["round"].is_number_unsigned() || !e.contains("plan"))
      throw std::invalid_argument(where + ": expected {\"round\": R (a round number), \"plan\": {...}}");
    out[e["round"].get<uint64_t>()] = planner::plan_from_json(e["plan"], where + ".plan");
  }
  return out;
}

namespace {

// Committed samples per second over the rounds in [from, to) of `rounds`
// by their own durations (NaN when there are none).
double throughput(const std::vector<actors::RoundReport>& rounds, size_t from, size_t to, int batch) {
  double ms = 0;
  size_t n = 0;
  for (size_t i = from; i < to && i < rounds.size(); ++i, ++n) ms += rounds[i].ms;
  return n == 0 || ms <= 0 ? std::nan("") : batch * n * 1000.0 / ms;
}

nlohmann::json stragglers_json(const std::vector<supervision::StragglerWatch::Verdict>& verdicts) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& v : verdicts) {
    list.push_back({{"device", v.device},
                    {"straggling", v.straggling},
                    {"round", v.round},
                    {"measured_ms", v.measured_ms},
                    {"predicted_ms", v.predicted_ms},
                    {"ratio_to_median", v.ratio_to_median}});
  }
  return list;
}

// A resumed job undoes the rounds after its checkpoint: their lines go, so
// the metrics list every committed round once, in order.
void drop_rounds_after(const std::string& path, int64_t last_kept) {
  if (path.empty()) return;
  std::ifstream in(path);
  if (!in) return;  // nothing logged yet
  std::string kept, line;
  while (std::getline(in, line)) {
    try {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("round") && j["round"].get<int64_t>() > last_kept) break;
    } catch (const nlohmann::json::exception&) {
      break;  // a torn last line of a coordinator that died
    }
    kept += line + "\n";
  }
  in.close();
  compute::write_file_atomically(path, kept, "metrics file");
}

// The last round metrics.jsonl logged, if any (a torn last line ends it).
std::optional<uint64_t> last_logged_round(const std::string& path) {
  std::optional<uint64_t> last;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    try {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("round") && j.contains("loss")) last = j["round"].get<uint64_t>();
    } catch (const nlohmann::json::exception&) {
      break;
    }
  }
  return last;
}

// A resumed job also asks the nodes for the job's committed states newer
// than its checkpoint (a coordinator that died after it left them there),
// no newer than the last round its metrics logged, so that every round
// stays logged exactly once.
std::optional<supervision::NodeStates> newer_states_on_nodes(caf::actor_system& system,
                                                             const DistributedOptions& options,
                                                             uint64_t checkpoint_round) {
  uint64_t at_most = std::numeric_limits<uint64_t>::max();
  if (!options.train.metrics_path.empty() && std::filesystem::exists(options.train.metrics_path)) {
    const auto logged = last_logged_round(options.train.metrics_path);
    if (!logged || *logged <= checkpoint_round) return std::nullopt;
    at_most = *logged;
  }
  const auto layout =
      supervision::StateLayout::of(compute::measure_layers(options.train.model), options.train.optimizer.kind);
  return supervision::newer_node_states(
      system, options.cluster, options.job_id, options.plan, layout, checkpoint_round, at_most,
      std::chrono::milliseconds(static_cast<int64_t>(options.connect_timeout_s * 1000)));
}

// A resumed job continues on the devices that are up: when devices of the
// checkpoint's plan do not answer now, the survivors get the full search's
// plan and the checkpoint's states cut and glued to it (the checkpoint file
// itself stays as it is). Throws when nothing fits on the survivors.
void leave_out_unreachable(actors::JobSpec& spec, std::vector<messages::StageState>& states,
                           const supervision::SupervisionOptions& supervision, const compute::TrainOptions& o,
                           compute::MetricsWriter& metrics) {
  planner::Cluster in_plan;
  for (const auto& device : spec.cluster.devices) {
    for (const auto& stage : spec.plan.stages) {
      for (const auto& d : stage.devices) {
        if (d.id == device.id) in_plan.devices.push_back(device);
      }
    }
  }
  const auto missing = testbed::unreachable_devices(in_plan, spec.connect_timeout);
  if (missing.empty()) return;
  std::string ids;
  for (const auto& id : missing) ids += (ids.empty() ? "" : ", ") + id;
  planner::TrainingConfig config;
  config.batch = spec.plan.batch;
  config.microbatches = spec.plan.microbatches;
  config.optimizer = supervision.optimizer;
  const planner::ReplanResult r = planner::replan_heavy(spec.plan, spec.cluster, supervision.profile, config, missing);
  if (!r.feasible) {
    throw std::runtime_error("cannot resume: device(s) " + ids + " of the checkpoint's plan do not answer and no plan of " +
                             o.model + " fits on the others (" + r.why + "); the checkpoint is unchanged");
  }
  const auto layout = supervision::StateLayout::of(supervision.profile.layers, supervision.optimizer);
  std::vector<messages::StageState> cut;
  for (const auto& stage : r.plan.stages) cut.push_back(layout.assemble(stage.begin, stage.end, states));
  states = std::move(cut);
  spec.plan = r.plan;
  const std::string text = "resuming without " + ids + " (not answering): plan searched again over the others";
  spdlog::warn("{}", text);
  metrics.write_line(nlohmann::json{{"event", "replan"}, {"text", text}, {"plan", planner::plan_to_json(r.plan)}}.dump());
}

}  // namespace

DistributedResult run_distributed_training(const DistributedOptions& input) {
  DistributedOptions options = input;
  compute::TrainOptions& o = options.train;
  std::vector<messages::StageState> states;
  uint64_t first_round = 0;
  if (!options.resume_checkpoint.empty()) {
    auto checkpoint = supervision::read_checkpoint(options.resume_checkpoint);
    const auto& job = checkpoint.job;
    try {
      first_round = job.at("round").get<uint64_t>() + 1;
      o.model = job.at("model").get<std::string>();
      if (!compute::is_known_model(o.model) && job.contains("model_file"))
        compute::register_saved_model(o.model, job.at("model_file").get<std::string>(),
                                      job.value("model_data", compute::fashion_mnist_shape().dataset));
      o.seed = job.at("seed").get<uint64_t>();
      options.plan = planner::plan_from_json(job.at("plan"), options.resume_checkpoint + " (plan)");
      o.batch = options.plan.batch;
      o.optimizer = actors::optimizer_from_json(job.at("optimizer"));
      options.job_id = job.value("job_id", options.job_id);
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error("checkpoint " + options.resume_checkpoint + ": incomplete job description: " + e.what());
    }
    states = std::move(checkpoint.states);
  }
  compute::find_model(o.model);
  check_plan(options.plan, o);
  at::set_num_threads(o.threads);

  const bool resumed = !options.resume_checkpoint.empty();
  actors::AsteroidConfig config(actors::coordinator_options(options.cluster));
  caf::actor_system system(config);
  std::string resumed_from_nodes;
  if (resumed) {
    const uint64_t checkpoint_round = first_round - 1;
    if (auto newer = newer_states_on_nodes(system, options, checkpoint_round)) {
      first_round = newer->round + 1;
      states = std::move(newer->states);
      resumed_from_nodes = "resuming from round " + std::to_string(newer->round) +
                           ", newer than the checkpoint's " + std::to_string(checkpoint_round) +
                           ", from the states the nodes keep: " + newer->sources;
      spdlog::info("{}", resumed_from_nodes);
    }
    drop_rounds_after(o.metrics_path, static_cast<int64_t>(first_round) - 1);
  }
  compute::MetricsWriter metrics(o.metrics_path, /*append=*/resumed);
  if (!resumed_from_nodes.empty()) {
    metrics.write_line(nlohmann::json{{"event", "resume"}, {"text", resumed_from_nodes},
                                      {"from_round", first_round}}.dump());
  }
  if (!o.summary_path.empty()) compute::check_writable(o.summary_path, "summary file");
  if (!o.weights_out.empty()) compute::check_writable(o.weights_out, "weights file");
  if (!options.trace_path.empty()) compute::check_writable(options.trace_path, "trace file");
  if (options.checkpoint_every > 0 && options.checkpoint_path.empty()) {
    throw std::invalid_argument("--checkpoint-every needs a place for the checkpoint (a run folder)");
  }

  const auto test = compute::open_dataset(o.model, compute::Split::test, o.data_dir);
  const int64_t train_size = compute::open_dataset(o.model, compute::Split::train, o.data_dir)->size();
  int64_t total = compute::rounds_per_epoch(train_size, o.batch) * o.epochs;
  if (o.rounds > 0) total = std::min(total, o.rounds);

  actors::JobSpec spec;
  spec.cluster = options.cluster;
  spec.plan = options.plan;
  spec.model = o.model;
  spec.seed = o.seed;
  spec.data_seed = o.seed;
  spec.optimizer = o.optimizer;
  spec.trace = !options.trace_path.empty() || options.print_grid;
  spec.job_id = options.job_id;
  spec.replicate_every = options.replicate_every;
  spec.replica_link_share = options.replica_link_share;
  spec.central_every = options.central_every;
  spec.end_round = static_cast<uint64_t>(total);
  spec.connect_timeout = std::chrono::milliseconds(static_cast<int64_t>(options.connect_timeout_s * 1000));
  supervision::SupervisionOptions supervision;
  supervision.recovery = options.recovery;
  supervision.heartbeat = options.heartbeat;
  supervision.straggler = options.straggler;
  supervision.adapt = options.adapt;
  supervision.optimizer = o.optimizer.kind;
  supervision.wire = options.wire;
  supervision.planner_on = options.planner_on;
  supervision.profile = options.profile ? *options.profile
                                        : supervision::uniform_profile(compute::measure_layers(o.model), options.cluster);
  supervision.checkpoint_every = options.checkpoint_every;
  supervision.checkpoint_path = options.checkpoint_path;
  if (resumed) leave_out_unreachable(spec, states, supervision, o, metrics);
  compute::ProgressLine progress(total - static_cast<int64_t>(first_round), o.progress);
  DistributedResult result;
  result.first_round = first_round;
  at::Tensor weights;  // the trained weights, evaluated once the job's actors ended
  // The job runs under its job actor (supervision/job_actor.h), which
  // answers status requests while this driver runs rounds and recoveries.
  supervision::run_job(system, [&](supervision::JobDriver& driver) {
    supervision::JobSupervisor job(system, spec, supervision, &driver.mailbox());
    job.on_event([&](const supervision::SupervisionEvent& e) {
      nlohmann::json line = {{"event", e.kind}, {"text", e.text}, {"unix_s", unix_seconds()}};
      if (!e.plan_json.empty()) line["plan"] = nlohmann::json::parse(e.plan_json);
      if (!e.devices.empty()) line["devices"] = e.devices;
      if (e.from_round >= 0) line["from_round"] = e.from_round;
      if (!e.old_plan_json.empty()) line["old_plan"] = nlohmann::json::parse(e.old_plan_json);
      if (!e.scales.empty()) line["scale"] = e.scales;
      for (const auto& [key, value] : e.numbers) {
        const bool whole = std::floor(value) == value && std::fabs(value) < 9007199254740992.0;
        line[key] = whole ? nlohmann::json(static_cast<int64_t>(value)) : nlohmann::json(value);
      }
      metrics.write_line(line.dump());
      if (options.on_event) options.on_event(e, job);
    });
    StatusFile status_file(options.status_path);
    job.on_status([&](const std::string& status) {
      driver.publish(status);
      status_file.update(status);
    });
    job.start(first_round, states);

    const auto t0 = std::chrono::steady_clock::now();
    auto record = [&](const actors::RoundReport& report) {
      if (!std::isfinite(report.loss)) {
        throw std::runtime_error("training diverged: loss is " + std::to_string(report.loss) + " in round " +
                                 std::to_string(report.round) + " (try a smaller --lr)");
      }
      result.committed.push_back(report);
      result.samples += o.batch;
      result.final_loss = report.loss;
      metrics.write({static_cast<int64_t>(report.round), report.loss, o.batch, report.ms,
                     {{"t_s", seconds_since(t0)}, {"unix_s", unix_seconds()}}});
      progress.update(static_cast<int64_t>(result.committed.size()), report.loss, result.samples);
      if (options.on_commit) options.on_commit(report);
    };
    job.on_commit(record);
    std::set<uint64_t> announced;
    while (static_cast<int64_t>(job.committed_rounds()) < total) {
      if (driver.stop_requested() || (options.should_stop && options.should_stop())) {
        job.flush();
        job.checkpoint_now();
        status_file.update(job.status(), true);
        throw supervision::JobStopped("stopped by request after round " + std::to_string(job.committed_rounds()) +
                                      (options.checkpoint_every > 0 ? "; continue with --resume " +
                                                                          options.checkpoint_path
                                                                    : std::string()));
      }
      if (static_cast<int64_t>(job.next_round()) < total) {
        if (announced.insert(job.next_round()).second) {
          const auto due = options.plan_switches.find(job.next_round());
          if (due != options.plan_switches.end()) job.switch_plan(due->second);
          if (options.before_round) options.before_round(job.next_round(), job);
        }
        job.run_round();
      } else {
        job.flush();
      }
    }
    status_file.update(job.status(), true);
    result.rounds = static_cast<int64_t>(result.committed.size());
    result.train_seconds = seconds_since(t0);
    result.samples_per_s = result.train_seconds > 0 ? static_cast<double>(result.samples) / result.train_seconds : 0;
    progress.finish();

    std::vector<at::Tensor> parts;
    for (const auto& state : job.final_states()) parts.push_back(messages::to_tensor(state.weights));
    weights = at::cat(parts);
    if (!o.weights_out.empty()) compute::save_flat_weights(o.weights_out, weights);
    // The trained states are here: the nodes need not keep them any more.
    result.node_kept_bytes = job.coordinator().release_job();
    result.failures = job.failures();
    result.stragglers = job.stragglers();
    result.device_scales = job.device_scales();
    result.trace = job.coordinator().trace();
    result.peak_memory_bytes = job.coordinator().peak_memory_bytes();
    result.final_plan = job.plan();
    result.dropped_messages = job.coordinator().dropped_messages();
  }, options.on_job_started);
  // Seconds of compute: not on the job driver's scheduler thread.
  const compute::EvalResult eval = compute::evaluate_weights(o.model, weights, *test, 500, o.test_samples);
  result.test_accuracy = eval.accuracy;
  result.test_loss = eval.mean_loss;
  result.test_samples = eval.samples;

  // Trace rows are named after the plan in force at the end; after a
  // re-plan, earlier rounds' rows keep their (stage, member) numbers.
  const auto names = member_names(result.final_plan);
  if (!options.trace_path.empty()) {
    std::ofstream(options.trace_path) << actors::perfetto_json(result.trace, names);
  }
  if (options.print_grid && !result.committed.empty()) {
    std::printf("Pipeline of the last round (stage, F/B, micro-batch):\n%s",
                actors::step_grid(result.trace, result.committed.back().round, names).c_str());
  }
  if (!o.summary_path.empty()) {
    compute::TrainingSummary s;
    s.test_accuracy = result.test_accuracy;
    s.samples_per_s = result.samples_per_s;
    s.rounds = result.rounds;
    s.strings = {{"strategy", options.plan.strategy}, {"model", o.model},
                 {"optimizer", optimizer_name(o.optimizer.kind)}};
    s.strings.insert(options.summary_strings.begin(), options.summary_strings.end());
    s.numbers = {{"test_loss", result.test_loss},
                 {"test_samples", static_cast<double>(result.test_samples)},
                 {"final_loss", result.final_loss},
                 {"train_seconds", result.train_seconds},
                 {"samples", static_cast<double>(result.samples)},
                 {"batch", static_cast<double>(o.batch)},
                 {"microbatches", static_cast<double>(options.plan.microbatches)},
                 {"stages", static_cast<double>(options.plan.stages.size())},
                 {"first_round", static_cast<double>(first_round)},
                 {"dropped_messages", static_cast<double>(result.dropped_messages)},
                 {"lr", o.optimizer.lr}};
    s.numbers.insert(options.summary_numbers.begin(), options.summary_numbers.end());
    if (options.plan.predicted_round_ms > 0) {
      s.numbers["predicted_samples_per_s"] = o.batch * 1000.0 / options.plan.predicted_round_ms;
    }
    // Every failure with its detection and recovery, and the throughput
    // before the first one and after the last one.
    nlohmann::json failures = failures_json(result.failures);
    if (!result.failures.empty()) {
      size_t first_replayed = result.committed.size(), last_replayed = 0;
      for (size_t i = 0; i < result.committed.size(); ++i) {
        for (const auto& f : result.failures) {
          if (result.committed[i].round == f.round) {
            first_replayed = std::min(first_replayed, i);
            last_replayed = std::max(last_replayed, i);
          }
        }
      }
      s.numbers["samples_per_s_before_failures"] = throughput(result.committed, 0, first_replayed, o.batch);
      s.numbers["samples_per_s_after_failures"] =
          throughput(result.committed, last_replayed + 1, result.committed.size(), o.batch);
    }
    s.json = {{"seed", std::to_string(o.seed)},
              {"failures", failures.dump()},
              {"final_plan", planner::plan_to_json(result.final_plan).dump()},
              {"node_kept_bytes", nlohmann::json(result.node_kept_bytes).dump()},
              {"stragglers", stragglers_json(result.stragglers).dump()},
              {"device_scale", nlohmann::json(result.device_scales).dump()}};
    compute::write_summary(o.summary_path, s);
  }
  return result;
}

}  // namespace asteroid::apps
