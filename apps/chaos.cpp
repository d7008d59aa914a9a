#include "apps/chaos.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <stdexcept>

#include "apps/testbed/presets.h"
#include "apps/testbed/process.h"
#include "compute/model_zoo.h"
#include "compute/profiler.h"
#include "compute/weights_io.h"
#include "planner/json_io.h"

namespace asteroid::apps {
namespace fs = std::filesystem;

namespace {

Fault at_round(uint64_t round, const std::string& action, const std::string& device) {
  Fault f;
  f.round = round;
  f.action = action;
  f.device = device;
  return f;
}

}  // namespace

std::vector<Fault> draw_chaos_schedule(const ChaosDraw& draw) {
  enum Kind { kill, freeze, slow, cut, partition, two, during, kinds };
  std::mt19937_64 rng(draw.seed);
  std::vector<Fault> out;
  const uint64_t later = std::max<uint64_t>(1, draw.spacing / 2);
  int left = draw.faults;
  for (uint64_t episode = 0; left > 0; ++episode) {
    const uint64_t r = draw.first_round + episode * draw.spacing;
    const Kind kind = static_cast<Kind>(rng() % (left >= 2 ? kinds : two));
    const std::string tag = std::to_string(episode) + "-" + std::to_string(rng() % 10000);
    auto taken_then_back = [&](const std::string& take, const std::string& back, const std::string& alias) {
      out.push_back(at_round(r, take, alias));
      out.push_back(at_round(r + later, back, alias));
    };
    switch (kind) {
      case kill: taken_then_back("kill", "restart", "?kill-" + tag); break;
      case freeze: taken_then_back("freeze", "thaw", "?freeze-" + tag); break;
      case slow: {
        const std::string alias = "?slow-" + tag;
        Fault f = at_round(r, "slow", alias);
        f.factor = 2 + static_cast<double>(rng() % 3);
        out.push_back(f);
        Fault back = at_round(r + later, "slow", alias);
        back.factor = 1;
        out.push_back(back);
        break;
      }
      case cut: {
        const std::string alias = "?cut-" + tag;
        Fault f = at_round(r, "cut-link", alias);
        f.peer = "hub";
        out.push_back(f);
        Fault back = at_round(r + later, "heal-link", alias);
        back.peer = "hub";
        out.push_back(back);
        break;
      }
      case partition: {
        // Two pipeline neighbours lose each other; both still reach the coordinator.
        const std::string alias = "?pcut-" + tag, peer = "?ppeer-" + tag;
        Fault f = at_round(r, "cut-link", alias);
        f.peer = peer;
        out.push_back(f);
        Fault back = at_round(r + later, "heal-link", alias);
        back.peer = peer;
        out.push_back(back);
        break;
      }
      case two:
      case during: {
        const std::string a = "?first-" + tag, b = "?second-" + tag;
        out.push_back(at_round(r, "kill", a));
        Fault second = at_round(r, "kill", b);
        second.on_recovery = kind == during;
        out.push_back(second);
        out.push_back(at_round(r + later, "restart", a));
        out.push_back(at_round(r + later, "restart", b));
        break;
      }
      case kinds: break;
    }
    left -= kind == two || kind == during ? 2 : 1;
  }
  std::stable_sort(out.begin(), out.end(), [](const Fault& x, const Fault& y) { return *x.round < *y.round; });
  for (size_t i = 0; i < out.size(); ++i) out[i].index = i;
  return out;
}

uint64_t chaos_rounds(const std::vector<Fault>& schedule, uint64_t spacing) {
  uint64_t last = 0;
  for (const auto& f : schedule)
    if (f.round) last = std::max(last, *f.round);
  return last + spacing;
}

nlohmann::json faults_to_json(const std::vector<Fault>& schedule) {
  nlohmann::json faults = nlohmann::json::array();
  for (const auto& f : schedule) {
    nlohmann::json j = {{"action", f.action}, {"device", f.device}};
    if (f.round) j["round"] = *f.round;
    if (f.after_s) j["after_s"] = *f.after_s;
    if (f.on_recovery) j["when"] = "recovery";
    if (f.action == "slow") j["factor"] = f.factor;
    if (!f.peer.empty()) j["peer"] = f.peer;
    faults.push_back(j);
  }
  return {{"faults", faults}};
}

planner::Plan chaos_plan(const std::vector<std::string>& devices, int layers, int batch, int microbatches) {
  if (devices.size() < 3 || layers < 3) throw std::invalid_argument("a chaos plan needs at least 3 devices and 3 layers");
  if (microbatches <= 0 || batch % microbatches != 0)
    throw std::invalid_argument("the batch (" + std::to_string(batch) + ") must split into " +
                                std::to_string(microbatches) + " micro-batches");
  std::vector<std::vector<std::string>> groups;
  if (devices.size() == 3) {
    groups = {{devices[0]}, {devices[1]}, {devices[2]}};
  } else {
    groups = {{devices[0]}, {devices[1], devices[2]}, {devices.begin() + 3, devices.end()}};
  }
  planner::Plan plan;
  plan.strategy = "custom";
  plan.batch = batch;
  plan.microbatches = microbatches;
  plan.microbatch_size = batch / microbatches;
  for (size_t s = 0; s < groups.size(); ++s) {
    planner::Stage stage;
    stage.begin = static_cast<int>(s) * layers / 3;
    stage.end = static_cast<int>(s + 1) * layers / 3;
    const int n = static_cast<int>(groups[s].size());
    for (int m = 0; m < n; ++m) {
      stage.devices.push_back({groups[s][static_cast<size_t>(m)],
                               plan.microbatch_size / n + (m < plan.microbatch_size % n ? 1 : 0)});
    }
    plan.stages.push_back(stage);
  }
  return plan;
}

ChaosVerdict judge_chaos(const std::vector<CommittedRound>& chaos, const std::vector<CommittedRound>& reference,
                         uint64_t rounds, double weights_rel_diff, double tolerance) {
  ChaosVerdict v;
  v.rounds_expected = rounds;
  v.rounds_committed = chaos.size();
  v.weights_rel_diff = weights_rel_diff;
  std::map<uint64_t, double> expected;
  for (const auto& r : reference) expected[r.round] = r.loss;
  std::vector<bool> seen(rounds, false);
  for (size_t i = 0; i < chaos.size(); ++i) {
    const auto& r = chaos[i];
    if (r.round >= rounds) {
      v.problems.push_back("round " + std::to_string(r.round) + " committed beyond the job's " + std::to_string(rounds));
      continue;
    }
    if (seen[r.round]) v.problems.push_back("round " + std::to_string(r.round) + " committed twice");
    if (i > 0 && r.round <= chaos[i - 1].round)
      v.problems.push_back("round " + std::to_string(r.round) + " committed after round " +
                           std::to_string(chaos[i - 1].round));
    seen[r.round] = true;
    const auto e = expected.find(r.round);
    if (e == expected.end()) continue;
    const double diff = std::abs(r.loss - e->second) / std::max(std::abs(e->second), 1e-12);
    v.max_loss_rel_diff = std::max(v.max_loss_rel_diff, diff);
    if (diff > 1e-6 && (v.first_departure < 0 || static_cast<int64_t>(r.round) < v.first_departure))
      v.first_departure = static_cast<int64_t>(r.round);
    if (diff > tolerance) {
      v.problems.push_back("round " + std::to_string(r.round) + ": loss " + std::to_string(r.loss) + " against " +
                           std::to_string(e->second) + " fault-free");
    }
  }
  for (uint64_t r = 0; r < rounds; ++r) {
    if (seen[r]) continue;
    ++v.rounds_lost;
    if (v.rounds_lost <= 5) v.problems.push_back("round " + std::to_string(r) + " never committed");
  }
  if (reference.size() != rounds)
    v.problems.push_back("the reference committed " + std::to_string(reference.size()) + " rounds, not " +
                         std::to_string(rounds));
  if (!(weights_rel_diff <= tolerance))
    v.problems.push_back("final weights differ from the fault-free run's by " + std::to_string(weights_rel_diff) +
                         " (relative)");
  v.passed = v.problems.empty();
  return v;
}

std::vector<CommittedRound> read_committed_rounds(const std::string& metrics_path) {
  std::ifstream in(metrics_path);
  if (!in) throw std::runtime_error("cannot read '" + metrics_path + "'");
  std::vector<CommittedRound> out;
  size_t number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (line.empty()) continue;
    try {
      const auto j = nlohmann::json::parse(line);
      if (!j.contains("round") || j.contains("event")) continue;
      out.push_back({j.at("round").get<uint64_t>(), j.at("loss").get<double>()});
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(metrics_path + ":" + std::to_string(number) + ": " + e.what());
    }
  }
  return out;
}

nlohmann::json plan_switches_from_metrics(const std::string& metrics_path, const planner::Plan& initial) {
  std::ifstream in(metrics_path);
  if (!in) throw std::runtime_error("cannot read '" + metrics_path + "'");
  // A round committed before a failure can be logged after it (its commit
  // is taken with the next step), so the event's from_round, not the line
  // order, says where a plan starts; a later event for the same round
  // replaces an earlier one (a recovery interrupted and tried again).
  std::map<uint64_t, nlohmann::json> starts;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    const std::string event = j.value("event", "");
    if ((event == "replan" || event == "rejoin") && j.contains("plan") && j.contains("from_round")) {
      // A plan that starts at a round drops every later start (they were
      // undone: the job went back to this round).
      const uint64_t from = j["from_round"].get<uint64_t>();
      starts.erase(starts.lower_bound(from), starts.end());
      starts[from] = j["plan"];
    }
  }
  nlohmann::json trained = planner::plan_to_json(initial);
  nlohmann::json switches = nlohmann::json::array();
  for (const auto& [round, plan] : starts) {
    if (plan.value("stages", nlohmann::json()) == trained.value("stages", nlohmann::json())) continue;
    switches.push_back({{"round", round}, {"plan", plan}});
    trained = plan;
  }
  return {{"switches", switches}};
}

namespace {

std::string self_executable() {
  char buffer[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buffer, sizeof buffer - 1);
  if (n <= 0) throw std::runtime_error("cannot find this executable (/proc/self/exe)");
  return std::string(buffer, static_cast<size_t>(n));
}

// Runs one `asteroid train`; its output goes to NAME.log in the folder.
void run_training(const ChaosOptions& o, const std::string& bin, const std::string& name,
                  const std::vector<std::string>& extra) {
  const std::string run = (fs::path(o.out) / name).string();
  std::vector<std::string> argv = {bin,        "train",     "--env",   o.env,
                                   "--bandwidth", std::to_string(o.bandwidth_mbps),
                                   "--model",  o.model,     "--batch", std::to_string(o.batch),
                                   "--seed",   std::to_string(o.draw.seed),
                                   "--plan",   (fs::path(o.out) / "plan.json").string(),
                                   "--profile", (fs::path(o.out) / "profile.json").string(),
                                   "--wire",   "exact",     "--no-baseline", "--no-plots",
                                   // Plans change only with failures, which the reference replays.
                                   "--adapt",  "off",
                                   "--out",    run,         "--weights-out", run + "/weights.bin"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.insert(argv.end(), o.train_args.begin(), o.train_args.end());
  std::printf("chaos: %s run -> %s\n", name.c_str(), run.c_str());
  std::fflush(stdout);
  const auto result = testbed::run_command(
      argv, testbed::Millis(static_cast<int64_t>(o.run_timeout_s * 1000)));
  const std::string log = (fs::path(o.out) / (name + ".log")).string();
  std::ofstream(log) << testbed::join_command(argv) << "\n\n" << result.out << "\n" << result.err;
  if (!result.ok()) {
    throw std::runtime_error("the " + name + " run failed (exit " + std::to_string(result.status) + "); see " + log);
  }
}

// The failures a run's summary.json lists, "device in round R" each; empty
// when there were none.
std::string failures_of(const std::string& summary_path) {
  std::ifstream in(summary_path);
  const auto summary = nlohmann::json::parse(in, nullptr, false);
  std::string out;
  if (!summary.is_object() || !summary.contains("failures") || !summary["failures"].is_array()) return out;
  for (const auto& f : summary["failures"]) {
    std::string devices;
    for (const auto& d : f.value("devices", nlohmann::json::array())) devices += (devices.empty() ? "" : "+") + d.get<std::string>();
    out += (out.empty() ? "" : ", ") + devices + " in round " + std::to_string(f.value("round", -1));
  }
  return out;
}

std::string number(double v, int digits = 1) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, v);
  return text;
}

}  // namespace

ChaosReport run_chaos(const ChaosOptions& o) {
  if (o.out.empty()) throw std::invalid_argument("a chaos campaign needs a folder (--out)");
  fs::create_directories(o.out);
  const std::string bin = o.asteroid_bin.empty() ? self_executable() : o.asteroid_bin;
  testbed::PresetOptions preset;
  preset.bandwidth_mbps = o.bandwidth_mbps;
  std::vector<std::string> devices;
  for (const auto& d : testbed::make_preset(o.env, preset).devices) devices.push_back(d.id);
  const planner::Plan plan = chaos_plan(devices, compute::layer_count(o.model), o.batch, o.microbatches);
  planner::save_plan(plan, (fs::path(o.out) / "plan.json").string());
  // Re-plans (after a loss, at an admission) price plans with this
  // machine's per-layer times, the same on every device. Without a profile
  // a plan given by hand is re-planned with the uniform placeholder, whose
  // near-zero compute makes one device always best; with each device's
  // emulated speed, nx-0 alone is best for fmnist-cnn. Either way the plan
  // collapsed to one device and most later faults hit idle devices
  // (bench/results/chaos-20261204-1616 and -1651). Equal speeds keep every
  // device worth using; the straggler watch then reads the Nanos as slow.
  compute::ProfileOptions profiling;
  profiling.batches = {1, 4, 16, 64};
  const planner::Profile measured = compute::profile_model(o.model, devices.front(), profiling);
  planner::Profile profile = measured;
  for (const auto& id : devices) profile.devices[id] = measured.devices.at(devices.front());
  planner::save_profile(profile, (fs::path(o.out) / "profile.json").string());
  const auto schedule = draw_chaos_schedule(o.draw);
  const uint64_t rounds = chaos_rounds(schedule, o.draw.spacing);
  const std::string faults_path = (fs::path(o.out) / "faults.json").string();
  std::ofstream(faults_path) << faults_to_json(schedule).dump(2) << "\n";

  const std::vector<std::string> length = {"--rounds", std::to_string(rounds)};
  std::vector<std::string> with_faults = length;
  with_faults.insert(with_faults.end(), {"--faults", faults_path});
  run_training(o, bin, "chaos", with_faults);
  const fs::path ref = fs::path(o.out) / "reference", run = fs::path(o.out) / "chaos";
  // The reference trains every round on the plan the campaign committed it
  // on: group re-splits change the order of float sums, which training
  // amplifies (docs/runtime.md "Chaos campaigns").
  const std::string switches_path = (fs::path(o.out) / "plan-switches.json").string();
  std::ofstream(switches_path) << plan_switches_from_metrics((run / "metrics.jsonl").string(), plan).dump(2) << "\n";
  std::vector<std::string> on_the_same_plans = length;
  on_the_same_plans.insert(on_the_same_plans.end(), {"--plan-switches", switches_path});
  // The reference has no fault to detect: a heartbeat verdict there is a
  // false one (a Nano's node starved within its CPU quota while it builds
  // its model: seen twice in full test-suite runs, nano-1 "lost" in round
  // 0), which trains other plans than the campaign's and so other float
  // sums. A long deadline (unless the campaign sets one), and a reference
  // that still recovered from something runs again, at most twice more.
  const bool deadline_given = std::find(o.train_args.begin(), o.train_args.end(), "--heartbeat-deadline") !=
                              o.train_args.end();
  if (!deadline_given) on_the_same_plans.insert(on_the_same_plans.end(), {"--heartbeat-deadline", "30000"});
  std::string reference_failures;
  for (int attempt = 1; attempt <= 3; ++attempt) {
    run_training(o, bin, "reference", on_the_same_plans);
    reference_failures = failures_of((ref / "summary.json").string());
    if (reference_failures.empty()) break;
    std::printf("chaos: the reference run recovered from failures of its own (%s); running it again\n",
                reference_failures.c_str());
    std::fflush(stdout);
  }

  const at::Tensor w = compute::load_flat_weights((run / "weights.bin").string());
  const at::Tensor w_ref = compute::load_flat_weights((ref / "weights.bin").string());
  const double weights_diff = w.sizes() == w_ref.sizes()
                                  ? (w - w_ref).norm().item<double>() / std::max(w_ref.norm().item<double>(), 1e-12)
                                  : INFINITY;
  ChaosReport report;
  report.verdict = judge_chaos(read_committed_rounds((run / "metrics.jsonl").string()),
                               read_committed_rounds((ref / "metrics.jsonl").string()), rounds, weights_diff,
                               o.tolerance);
  if (!reference_failures.empty()) {
    report.verdict.passed = false;
    report.verdict.problems.push_back("the fault-free reference run recovered from failures of its own in 3 tries (" +
                                      reference_failures + "): it trained other plans than the campaign's");
  }
  const ChaosVerdict& v = report.verdict;

  // Faults as injected, failures as the job recovered them.
  const auto injected = planner::read_json_lines((run / "faults.jsonl").string());
  std::ifstream summary_in(run / "summary.json");
  const nlohmann::json summary = nlohmann::json::parse(summary_in);
  const nlohmann::json failures = summary.contains("failures") ? summary["failures"] : nlohmann::json::array();
  size_t taken = 0, skipped = 0;
  for (const auto& f : injected) {
    const std::string action = f.value("action", "");
    const bool takes = action == "kill" || action == "freeze" || action == "cut-link" ||
                       (action == "slow" && f.value("factor", 1.0) != 1.0);
    if (takes && f.value("ok", false)) ++taken;
    if (!f.value("ok", false)) ++skipped;
  }
  double slowest_ms = 0;
  uint64_t redone = 0;
  for (const auto& f : failures) {
    slowest_ms = std::max(slowest_ms, f.value("recovery_ms", 0.0));
    if (f.value("replan", std::string()) == "interrupted") continue;  // the attempt that completed counts
    const uint64_t round = f.value("round", uint64_t{0}), from = f.value("resumed_from", round);
    if (round > from) redone += round - from;
  }
  report.json = {{"passed", v.passed},
                 {"problems", v.problems},
                 {"seed", o.draw.seed},
                 {"faults_drawn", o.draw.faults},
                 {"faults_injected", taken},
                 {"injections_not_done", skipped},
                 {"failures_recovered", failures.size()},
                 {"rounds", rounds},
                 {"rounds_committed", v.rounds_committed},
                 {"rounds_lost", v.rounds_lost},
                 {"rounds_redone", redone},
                 {"slowest_recovery_ms", slowest_ms},
                 {"max_loss_rel_diff", v.max_loss_rel_diff},
                 {"first_departure_round", v.first_departure},
                 {"weights_rel_diff", v.weights_rel_diff},
                 {"tolerance", o.tolerance},
                 {"env", o.env},
                 {"bandwidth_mbps", o.bandwidth_mbps},
                 {"model", o.model},
                 {"injected", injected},
                 {"failures", failures},
                 {"chaos_samples_per_s", summary.value("samples_per_s", 0.0)},
                 {"chaos_test_accuracy", summary.value("test_accuracy", 0.0)}};
  std::string md = "# Chaos campaign: " + std::string(v.passed ? "PASSED" : "FAILED") + "\n\n";
  md += "env " + o.env + " at " + number(o.bandwidth_mbps, 0) + " Mbit/s, " + o.model + ", seed " +
        std::to_string(o.draw.seed) + ", " + std::to_string(rounds) + " rounds, exact wire.\n\n";
  md += "| faults drawn | injected | not done | failures recovered | rounds committed | rounds lost | rounds redone | "
        "slowest recovery | max loss diff | weights diff |\n|---|---|---|---|---|---|---|---|---|---|\n";
  md += "| " + std::to_string(o.draw.faults) + " | " + std::to_string(taken) + " | " + std::to_string(skipped) + " | " +
        std::to_string(failures.size()) + " | " + std::to_string(v.rounds_committed) + " | " +
        std::to_string(v.rounds_lost) + " | " + std::to_string(redone) + " | " + number(slowest_ms, 0) + " ms | " +
        number(v.max_loss_rel_diff * 1e6, 2) + "e-6 | " + number(v.weights_rel_diff * 1e6, 2) + "e-6 |\n\n";
  md += "## Faults (faults.jsonl)\n\n| t (s) | round | action | device | ok |\n|---|---|---|---|---|\n";
  for (const auto& f : injected) {
    md += "| " + (f.contains("t_s") ? number(f["t_s"].get<double>(), 2) : std::string("-")) + " | " +
          (f.contains("round") ? f["round"].dump() : std::string("-")) + " | " + f.value("action", "") +
          (f.value("when", "") == "recovery" ? " (during a recovery)" : "") + " | " + f.value("device", "") + " | " +
          (f.value("ok", false) ? "yes" : f.value("error", "no")) + " |\n";
  }
  md += "\n## Failures (summary.json)\n\n| detected (s) | round | devices | kind | re-plan | recovery (ms) |\n"
        "|---|---|---|---|---|---|\n";
  for (const auto& f : failures) {
    std::string names;
    for (const auto& d : f.value("devices", nlohmann::json::array())) names += (names.empty() ? "" : ", ") + d.get<std::string>();
    md += "| " + number(f.value("detected_s", 0.0), 2) + " | " + std::to_string(f.value("round", uint64_t{0})) + " | " +
          names + " | " + f.value("kind", "") + " | " + f.value("replan", "") + " | " +
          number(f.value("recovery_ms", 0.0), 0) + " |\n";
  }
  if (!v.problems.empty()) {
    md += "\n## Problems\n\n";
    for (const auto& p : v.problems) md += "- " + p + "\n";
  }
  report.markdown = md;
  std::ofstream(fs::path(o.out) / "report.json") << report.json.dump(2) << "\n";
  std::ofstream(fs::path(o.out) / "report.md") << md;
  return report;
}

}  // namespace asteroid::apps
