#include "apps/train_job.h"

#include <ATen/Parallel.h>
#include <caf/all.hpp>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>

#include "actors/planner_actor.h"
#include "actors/system_config.h"
#include "actors/tls.h"
#include "actors/system_config.h"
#include "apps/fault_schedule.h"
#include "apps/profiling.h"
#include "apps/testbed/emulated_cluster.h"
#include "apps/testbed/process.h"
#include "compute/dataset.h"
#include "compute/model_zoo.h"
#include "compute/torchscript_model.h"
#include "compute/profiler.h"
#include "planner/baselines.h"
#include "planner/cost_model.h"
#include "planner/json_io.h"
#include "planner/profile_tables.h"
#include "planner/rank.h"
#include "planner/report.h"
#include "planner/search.h"
#include "supervision/checkpoint.h"
#include "supervision/job_supervisor.h"

#ifndef ASTEROID_PLOT_SCRIPT
#define ASTEROID_PLOT_SCRIPT ""
#endif

namespace asteroid::apps {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void say(const char* format, ...) __attribute__((format(printf, 1, 2)));
void say(const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vfprintf(stdout, format, args);
  va_end(args);
  std::fflush(stdout);
}

// ---------------------------------------------------------------- signals

// SIGINT/SIGTERM: stop at the next step or round boundary and clean up. The
// handler resets itself, so a second signal ends the process at once.
std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) {
  g_stop = true;
  static const char text[] = "\nasteroid train: stopping (cluster goes down at the next round; again to force)\n";
  ssize_t ignored = ::write(STDERR_FILENO, text, sizeof text - 1);
  (void)ignored;
}

class StopSignals {
 public:
  StopSignals() {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  static void check(const char* where) {
    if (g_stop) throw std::runtime_error(std::string("interrupted ") + where);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

// ---------------------------------------------------------------- namespaces

// Brings this process's main thread back to the network namespace it
// started in. The testbed's down() kills every process whose main thread is
// in one of the cluster's namespaces, the hub included, so the coordinator
// must leave the hub before it brings the cluster down.
class HomeNetwork {
 public:
  HomeNetwork() : fd_(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)) {}
  ~HomeNetwork() {
    go_home();
    if (fd_ >= 0) ::close(fd_);
  }
  HomeNetwork(const HomeNetwork&) = delete;
  HomeNetwork& operator=(const HomeNetwork&) = delete;
  void left_home() { away_ = true; }
  void go_home() {
    if (!away_ || fd_ < 0) return;
    if (::setns(fd_, CLONE_NEWNET) != 0)
      spdlog::error("asteroid train: cannot return to the host network namespace: {}", std::strerror(errno));
    away_ = false;
  }

 private:
  int fd_ = -1;
  bool away_ = false;
};

// ---------------------------------------------------------------- run folder

std::string time_stamp() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return buf;
}

// runs_root/<time>-<name> (a suffix when taken) and runs_root/latest -> it.
std::string create_run_folder(const TrainJobOptions& o, const std::string& name) {
  if (!o.out.empty()) {
    fs::create_directories(o.out);
    return o.out;
  }
  fs::create_directories(o.runs_root);
  const std::string base = time_stamp() + "-" + name;
  std::string leaf = base;
  for (int i = 2; fs::exists(fs::path(o.runs_root) / leaf); ++i) leaf = base + "-" + std::to_string(i);
  fs::create_directories(fs::path(o.runs_root) / leaf);
  const fs::path latest = fs::path(o.runs_root) / "latest";
  std::error_code ec;
  if (fs::is_symlink(latest, ec) || !fs::exists(latest, ec)) {
    fs::remove(latest, ec);
    fs::create_directory_symlink(leaf, latest, ec);
  }
  return (fs::path(o.runs_root) / leaf).string();
}

void copy_into(const std::string& from, const fs::path& to) {
  if (from.empty() || !fs::exists(from)) return;
  std::error_code ec;
  if (fs::exists(to) && fs::equivalent(from, to, ec)) return;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
}

// ---------------------------------------------------------------- planning

// The device of a one-device plan.
std::string only_device(const planner::Plan& plan) { return plan.stages.front().devices.front().id; }

// Whether the model can fit at all, from its layer sizes alone (before any
// node starts): feasibility depends on memory only, so a uniform profile
// answers it. Returns the reason when it cannot.
std::optional<std::string> fits_nowhere(const std::string& strategy, const planner::Cluster& cluster,
                                        const std::vector<planner::LayerInfo>& layers,
                                        const planner::TrainingConfig& config) {
  const planner::Profile uniform = supervision::uniform_profile(layers, cluster);
  const planner::PlanResult r =
      planner::make_plan(planner::ProfileTables(cluster, uniform), config, planner::parse_strategy(strategy));
  if (r.feasible) return std::nullopt;
  return r.why.empty() ? r.evaluation.infeasible_reason : r.why;
}

// ---------------------------------------------------------------- output

std::string device_table(const planner::Cluster& cluster, const planner::Profile& profile,
                         const std::map<std::string, LinkMeasurement>& links, int batch) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "  %-10s %-6s %9s %10s %16s %12s\n", "device", "class", "cpu share", "memory",
                "fwd+bwd ms/batch", "link Mbit/s");
  out += line;
  for (const auto& d : cluster.devices) {
    double total = 0;
    auto p = profile.devices.find(d.id);
    if (p != profile.devices.end()) {
      planner::Cluster alone = cluster;
      alone.devices = {d};
      alone.links.clear();
      planner::ProfileTables t(alone, profile);
      double f = 0, b = 0;
      t.times(0, 0, t.layer_count(), batch, &f, &b);
      total = f + b;
    }
    const std::string cls = d.emulate && d.emulate->device_class ? *d.emulate->device_class : "-";
    const double share = d.emulate && d.emulate->cpu_share ? *d.emulate->cpu_share : 0;
    auto l = links.find(d.id);
    std::snprintf(line, sizeof line, "  %-10s %-6s %9s %8.0f MiB %16.1f %12s\n", d.id.c_str(), cls.c_str(),
                  share > 0 ? (std::to_string(share).substr(0, 5)).c_str() : "-", d.memory_mb, total,
                  l != links.end() ? std::to_string(static_cast<int>(std::lround(l->second.mbps))).c_str() : "-");
    out += line;
  }
  return out;
}

std::string plot_script() {
  if (const char* e = std::getenv("ASTEROID_PLOT_SCRIPT"); e && *e) return e;
  if (fs::exists(ASTEROID_PLOT_SCRIPT)) return ASTEROID_PLOT_SCRIPT;
  const fs::path beside = fs::path(testbed::self_executable()).parent_path() / "plot_run.py";
  return fs::exists(beside) ? beside.string() : std::string(ASTEROID_PLOT_SCRIPT);
}

// PNG plots by scripts/plot_run.py with Debian's python3 and matplotlib. A
// failure is reported and the job goes on.
std::vector<std::string> make_plots(const std::string& run_dir) {
  const std::string script = plot_script();
  const std::string python = fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  if (script.empty() || !fs::exists(script)) {
    say("plots: skipped, plot script not found (%s; set ASTEROID_PLOT_SCRIPT)\n", script.c_str());
    return {};
  }
  testbed::CommandResult r;
  try {
    r = testbed::run_command({python, script, run_dir}, testbed::Millis(180000));
  } catch (const std::exception& e) {
    say("plots: failed to start %s: %s\n", python.c_str(), e.what());
    return {};
  }
  if (!r.ok()) {
    std::string why = r.err.empty() ? r.out : r.err;
    if (why.size() > 600) why = "..." + why.substr(why.size() - 600);
    say("plots: failed (%s exit %d): %s\n", python.c_str(), r.status, why.c_str());
    return {};
  }
  std::vector<std::string> made;
  for (const char* png : {"loss.png", "throughput.png", "timeline.png"})
    if (fs::exists(fs::path(run_dir) / png)) made.push_back(png);
  return made;
}

// Committed throughput over the rounds after the first `skip` (start-up
// costs), by their own durations; 0 when there are too few.
double steady_throughput(const std::vector<actors::RoundReport>& rounds, size_t skip, int batch) {
  double ms = 0;
  size_t n = 0;
  for (size_t i = skip; i < rounds.size(); ++i, ++n) ms += rounds[i].ms;
  return n == 0 || ms <= 0 ? 0 : batch * n * 1000.0 / ms;
}

// Rounds left out of a throughput as warm-up (the first rounds pay for
// allocation, caches and connections).
constexpr size_t kWarmupRounds = 5;

// A plan trained alone on the running cluster from the job's initial
// weights: `rounds` rounds of the same model, batch, seed and optimizer,
// without replication, trace or checkpoints, and a small evaluation (its
// accuracy is not the point). Returns its steady throughput; its metrics and
// summary go to the run folder as <name>-metrics.jsonl, <name>-summary.json.
double measure_plan(const DistributedOptions& job, const planner::Plan& plan, int64_t rounds, const fs::path& run,
                    const std::string& name) {
  DistributedOptions b = job;
  b.plan = plan;
  b.train.strategy = plan.strategy;
  b.train.epochs = 1;
  b.train.rounds = rounds;
  b.train.metrics_path = (run / (name + "-metrics.jsonl")).string();
  b.train.summary_path = (run / (name + "-summary.json")).string();
  b.train.weights_out.clear();
  b.train.test_samples = 100;
  b.train.progress = compute::ProgressLine::Mode::off;
  b.trace_path.clear();
  b.print_grid = false;
  b.replicate_every = 0;
  b.central_every = 0;
  b.checkpoint_every = 0;
  b.checkpoint_path.clear();
  b.resume_checkpoint.clear();
  b.job_id = job.job_id + "-" + name;
  b.before_round = [name](uint64_t, supervision::JobSupervisor&) { StopSignals::check(("while measuring " + name).c_str()); };
  b.summary_strings.clear();
  b.summary_numbers.clear();
  const DistributedResult r = run_distributed_training(b);
  return steady_throughput(r.committed, kWarmupRounds, plan.batch);
}

size_t device_count(const planner::Plan& plan) {
  size_t n = 0;
  for (const auto& stage : plan.stages) n += stage.devices.size();
  return n;
}

// ---------------------------------------------------------------- the job

// The job of docs/default-job.md, one member function per numbered step, in
// the order run_train_job calls them. Each step leaves what the later ones
// need in the fields below.
struct TrainJob {
  explicit TrainJob(const TrainJobOptions& input) : o(input) {}
  TrainJob(const TrainJob&) = delete;
  TrainJob& operator=(const TrainJob&) = delete;

  // 0. Everything that can be checked before anything starts.
  void check_options();
  void check_flags();
  void load_input_files();
  void describe_cluster();
  void check_named_devices() const;
  void set_training_config();
  void check_the_model_fits() const;
  // The run folder.
  void make_run_folder();
  void stop_on_signals() { signals.emplace(); }
  // 1. The cluster.
  void bring_cluster_up();
  void bring_up_emulated_cluster();
  void use_running_cluster();
  void check_devices_answer();
  // 2. Profile on every device, measure the links.
  void profile_and_measure_links();
  void profile_on_nodes();
  // 3. Plan.
  void choose_plan();
  void search_plan();
  void save_given_plan();
  // 3b. The probe.
  void probe();
  void probe_plan_against_single();
  void switch_to_single();
  // 4. Deploy and train (5. evaluate).
  void train();
  void point_outputs_at_run_folder();
  // 6. The measured baseline.
  void measure_baseline();
  // 7. Cluster down.
  void bring_cluster_down();
  // 8. The summary.
  void write_summary();
  void copy_outputs_into_run_folder() const;
  void add_mechanisms(json& s) const;
  void add_throughputs(json& s) const;
  void add_links(json& s) const;
  void draw_plots() const;
  void print_summary();
  // Any failure after the run folder exists.
  void clean_up_after(const std::exception& e);

  const Clock::time_point job_t0 = Clock::now();
  TrainJobOptions o;
  DistributedOptions& d = o.distributed;
  compute::TrainOptions& t = d.train;
  std::map<std::string, double> timings;

  // Step 0.
  bool managed = false;  // this job brings the cluster up and down (--env)
  std::optional<planner::Plan> given_plan;
  std::optional<planner::Profile> given_profile;
  std::vector<Fault> faults;
  testbed::ClusterSpec spec;
  planner::Cluster cluster;  // with hosts and ports once known
  // --skip-unreachable: the devices that did not answer at the start (and
  // their links), left out of profiling and planning; the job's cluster
  // keeps them, so they join when they answer (profiled then, beside the
  // rounds).
  planner::Cluster joining;
  std::string cluster_name;
  planner::TrainingConfig config;
  // The run folder.
  std::string run_dir;
  fs::path run;
  TrainJobResult out;
  // Step 1.
  testbed::Mechanisms mechanisms;
  bool have_mechanisms = false;
  // Step 2.
  std::optional<planner::Profile> profile;
  std::map<std::string, LinkMeasurement> links;
  ClusterMeasurement measured;
  planner::Cluster plan_cluster;
  // Step 3.
  planner::Plan plan;
  std::optional<planner::Plan> baseline_plan;  // the best single device's
  // Step 4.
  std::string metrics_path, summary_path, trace_path;
  // Step 6.
  double steady = 0;

  // Declared in this order so that they are destroyed in the reverse one:
  // the injector first, then back home (out of the hub before the cluster
  // goes down), then the cluster (owning: managed, or attached: --cluster),
  // and the signal handlers last.
  std::optional<StopSignals> signals;
  std::optional<testbed::EmulatedCluster> emulated;
  HomeNetwork home;
  std::unique_ptr<FaultInjector> injector;
};

// ---- 0. everything that can be checked before anything starts
void TrainJob::check_options() {
  check_flags();
  load_input_files();
  describe_cluster();
  check_faults(faults, cluster, o.faults_file);
  check_named_devices();
  set_training_config();
  check_the_model_fits();
}

void TrainJob::check_flags() {
  if (!o.env.empty() && !o.cluster_file.empty())
    throw std::invalid_argument("give --env (an emulated cluster to bring up) or --cluster (a running one), not both");
  managed = o.cluster_file.empty();
  if (managed && o.env.empty()) o.env = "C";
  if (o.strategy != "hpp" && o.strategy != "dp" && o.strategy != "pp" && o.strategy != "single")
    throw std::invalid_argument("--strategy must be hpp, dp, pp or single, got '" + o.strategy + "'");
  if (o.microbatches < 0) throw std::invalid_argument("--microbatches must be >= 0 (0: searched)");
  if (o.profile_points == 1)
    throw std::invalid_argument("--profile-points must be 0 (measure all) or at least 2: one batch size gives no "
                                "per-sample cost to predict the others from");
  if (!(o.min_gain >= 0)) throw std::invalid_argument("--min-gain must be >= 0, got " + std::to_string(o.min_gain));
  if (o.probe_rounds < 0 || (o.probe_rounds > 0 && o.probe_rounds <= static_cast<int64_t>(kWarmupRounds)))
    throw std::invalid_argument("--probe-rounds must be 0 (no probe) or more than the " +
                                std::to_string(kWarmupRounds) + " warm-up rounds, got " +
                                std::to_string(o.probe_rounds));
  if (o.microbatches > 0 && t.batch % o.microbatches != 0)
    throw std::invalid_argument("--batch " + std::to_string(t.batch) + " is not divisible by --microbatches " +
                                std::to_string(o.microbatches));
  if (!o.resume.empty() && !o.plan_file.empty()) throw std::invalid_argument("--resume takes the plan from the checkpoint: no --plan");
  if (!o.resume.empty()) {
    d.resume_checkpoint = fs::is_directory(o.resume) ? (fs::path(o.resume) / "checkpoint.bin").string() : o.resume;
    // A crash between keeping the previous generation and moving the new
    // one into place leaves only the previous (read_checkpoint takes it).
    if (!fs::exists(d.resume_checkpoint) && !fs::exists(supervision::previous_checkpoint(d.resume_checkpoint)))
      throw std::invalid_argument("--resume: no checkpoint at " + d.resume_checkpoint);
    if (d.checkpoint_path.empty()) d.checkpoint_path = d.resume_checkpoint;
    // What it trains, for the lines printed before the job reads it again.
    t.model = supervision::read_checkpoint(d.resume_checkpoint).job.value("model", t.model);
  } else {
    t.model = compute::resolve_model(t.model, o.data_file, o.test_data_file);
    if (t.batch <= 0) throw std::invalid_argument("--batch must be positive");
  }
}

void TrainJob::load_input_files() {
  if (!o.plan_file.empty()) given_plan = planner::load_plan(o.plan_file);
  if (!o.profile_file.empty()) given_profile = planner::load_profile(o.profile_file);
  if (!o.faults_file.empty()) faults = load_faults(o.faults_file);
  if (o.resume.empty()) compute::open_dataset(t.model, compute::Split::test, t.data_dir);  // missing data: say so now
}

// The preset to bring up (--env), or the running cluster's file (--cluster).
void TrainJob::describe_cluster() {
  if (managed) {
    spec = testbed::preset_spec(o.env, o.bandwidth_mbps > 0 ? o.bandwidth_mbps : 1000, o.cpu_budget);
    testbed::parse_cpu_mode(o.cpu_mode);
    testbed::parse_net_mode(o.net_mode);
    if (!o.tls_dir.empty()) throw std::invalid_argument("--tls-dir is for a running cluster (--cluster); --env makes its own");
    cluster = spec.cluster;
    cluster_name = "env " + o.env;
  } else {
    if (o.bandwidth_mbps > 0 || o.cpu_budget > 0)
      throw std::invalid_argument("--bandwidth and --cpu-budget shape a cluster this job brings up (--env), not a "
                                  "running one (--cluster)");
    cluster = planner::load_cluster(o.cluster_file);
    if (!o.tls_dir.empty()) cluster.tls_dir = o.tls_dir;
    cluster_name = o.cluster_file;
  }
}

void TrainJob::check_named_devices() const {
  if (!d.planner_on.empty() && cluster.index_of(d.planner_on) < 0)
    throw std::invalid_argument("--planner-on " + d.planner_on + ": no such device in " + cluster_name);
  if (!given_plan) return;
  for (const auto& s : given_plan->stages)
    for (const auto& sd : s.devices)
      if (cluster.index_of(sd.id) < 0)
        throw std::invalid_argument(o.plan_file + ": device '" + sd.id + "' is not in " + cluster_name);
}

void TrainJob::set_training_config() {
  config.batch = static_cast<int>(t.batch);
  config.microbatches = o.microbatches > 0 ? o.microbatches : 1;
  config.search_microbatches = o.microbatches == 0;
  config.optimizer = t.optimizer.kind;
  config.wire = planner::parse_wire_policy(o.wire);
  config.codec_block = o.codec_block;
  d.wire = o.wire;
  at::set_num_threads(t.threads);  // before any Torch work: no thread pool beyond it
}

void TrainJob::check_the_model_fits() const {
  if (given_plan || !o.resume.empty()) return;
  if (auto why = fits_nowhere(o.strategy, cluster, compute::measure_layers(t.model), config))
    throw std::runtime_error("the model " + t.model + " does not fit on " + cluster_name + " (" + o.strategy +
                             ", batch " + std::to_string(t.batch) + "): " + *why);
}

// ---- the run folder
void TrainJob::make_run_folder() {
  std::string name = managed ? o.env : fs::path(o.cluster_file).parent_path().filename().string();
  if (name.empty() || name == "." || name == "..") name = "cluster";
  name += "-" + t.model + "-" + (given_plan ? given_plan->strategy : o.resume.empty() ? o.strategy : "resume");
  run_dir = create_run_folder(o, name);
  run = fs::path(run_dir);
  out.run_dir = run_dir;
  say("run folder: %s\n", run_dir.c_str());
}

// ---- 1. the cluster
void TrainJob::bring_cluster_up() {
  if (managed)
    bring_up_emulated_cluster();
  else
    use_running_cluster();
  StopSignals::check("after bringing the cluster up");
}

void TrainJob::bring_up_emulated_cluster() {
  say("[1/8] bringing up %s: %zu devices at %g Mbit/s\n", cluster_name.c_str(), cluster.devices.size(),
      spec.cluster.default_bandwidth_mbps);
  testbed::LaunchOptions launch;
  launch.dir = (run / "cluster").string();
  launch.die_with_parent = true;
  launch.cpu = testbed::parse_cpu_mode(o.cpu_mode);
  launch.net = testbed::parse_net_mode(o.net_mode);
  launch.tls = o.tls;
  launch.cancel = &g_stop;
  launch.log = [](const std::string& m) { say("  %s\n", m.c_str()); };
  const auto t0 = Clock::now();
  emulated.emplace(testbed::EmulatedCluster::up(spec, launch));
  home.left_home();
  testbed::enter_cluster_network(launch.dir);
  timings["up"] = seconds_since(t0);
  cluster = emulated->cluster();
  mechanisms = emulated->mechanisms();
  have_mechanisms = true;
  say("  up in %.1f s: %s\n", timings["up"], mechanisms.summary().c_str());
}

void TrainJob::use_running_cluster() {
  say("[1/8] using the running cluster %s (%zu devices)\n", cluster_name.c_str(), cluster.devices.size());
  home.left_home();
  testbed::enter_cluster_network(o.cluster_file);
  const fs::path dir = fs::absolute(o.cluster_file).parent_path();
  if (fs::exists(dir / "nodes.json")) {
    emulated.emplace(testbed::EmulatedCluster::attach(dir.string()));
    mechanisms = emulated->mechanisms();
    have_mechanisms = true;
    say("  emulated (%s)\n", mechanisms.summary().c_str());
  } else if (!faults.empty()) {
    throw std::invalid_argument("--faults needs an emulated cluster (a cluster.json written by `asteroid cluster "
                                "up`, with its nodes.json beside it); " +
                                o.cluster_file + " has none");
  }
  check_devices_answer();
}

// Every device the job needs (the given plan's, or all) has an address and
// accepts a connection.
void TrainJob::check_devices_answer() {
  planner::Cluster check = cluster;
  if (given_plan) {
    check.devices.clear();
    for (const auto& dv : cluster.devices)
      for (const auto& s : given_plan->stages)
        for (const auto& sd : s.devices)
          if (sd.id == dv.id) check.devices.push_back(dv);
  }
  std::vector<std::string> no_address;
  for (const auto& dv : check.devices)
    if (dv.host.empty() || dv.port <= 0) no_address.push_back(dv.id);
  if (!no_address.empty()) {
    std::string ids;
    for (const auto& id : no_address) ids += (ids.empty() ? "" : ", ") + id;
    throw std::invalid_argument(o.cluster_file + ": device(s) " + ids + " have no host and port to reach");
  }
  auto unreachable = testbed::unreachable_devices(check, testbed::Millis(3000));
  // With TLS, a device that accepts connections may still refuse (or be
  // refused by) the coordinator's certificate check: say why.
  std::map<std::string, std::string> why;
  for (const auto& id : unreachable) why[id] = "nothing accepts connections there within 3 s";
  if (!check.tls_dir.empty()) {
    const auto tls = actors::coordinator_options(check).tls;
    std::vector<std::pair<std::string, actors::TlsTransport::Route>> routes;
    for (const auto& dv : check.devices)
      if (!why.count(dv.id)) routes.emplace_back(dv.id, tls->route(dv.host, static_cast<uint16_t>(dv.port), dv.id));
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    for (const auto& [id, route] : routes) {
      route.ready.wait_until(deadline);
      const auto& dv = check.devices[static_cast<size_t>(check.index_of(id))];
      const std::string refusal = tls->last_failure(dv.host, static_cast<uint16_t>(dv.port));
      if (refusal.empty()) continue;
      unreachable.push_back(id);
      why[id] = "TLS: " + refusal;
    }
  }
  const bool go_on = !o.resume.empty() || (o.skip_unreachable && !given_plan);
  if (!unreachable.empty() && go_on && unreachable.size() < check.devices.size()) {
    // A resumed job goes on with the devices that are up (and re-plans);
    // with --skip-unreachable a new job is planned without the others.
    std::string ids;
    for (const auto& id : unreachable) ids += (ids.empty() ? "" : ", ") + id + " (" + why[id] + ")";
    say("  not usable: %s; %s on the others%s\n", ids.c_str(), o.resume.empty() ? "training" : "resuming",
        o.resume.empty() ? " (they join when they answer)" : "");
    if (o.resume.empty()) {
      const std::set<std::string> gone(unreachable.begin(), unreachable.end());
      auto& devices = cluster.devices;
      const auto kept = std::stable_partition(devices.begin(), devices.end(),
                                              [&](const auto& dv) { return gone.count(dv.id) == 0; });
      joining.devices.assign(kept, devices.end());
      devices.erase(kept, devices.end());
      auto& links = cluster.links;
      const auto direct = std::stable_partition(
          links.begin(), links.end(), [&](const auto& l) { return gone.count(l.a) == 0 && gone.count(l.b) == 0; });
      joining.links.assign(direct, links.end());
      links.erase(direct, links.end());
    }
  } else if (!unreachable.empty()) {
    std::string ids;
    for (const auto& id : unreachable) {
      const auto& dv = cluster.devices[static_cast<size_t>(cluster.index_of(id))];
      ids += (ids.empty() ? "" : "; ") + id + " at " + dv.host + ":" + std::to_string(dv.port) + ": " + why[id];
    }
    throw std::runtime_error("cannot use device(s) of " + o.cluster_file + ": " + ids +
                             " (is the cluster up? `asteroid cluster up`, `asteroid cluster status`; "
                             "--skip-unreachable trains on the others)");
  }
}

// ---- 2. profile on every device, measure the links
void TrainJob::profile_and_measure_links() {
  profile = given_profile;
  plan_cluster = cluster;
  if (!profile && !o.resume.empty()) {
    // The resumed run's own profile: re-plans and adaptation judge the
    // devices against what they measured, not against a uniform guess.
    const fs::path saved = fs::path(d.resume_checkpoint).parent_path() / "profile.json";
    if (fs::exists(saved)) {
      const auto loaded = planner::load_profile(saved.string());
      if (loaded.model == t.model) {
        profile = loaded;
        say("  re-plans use the profile of the resumed run, %s\n", saved.string().c_str());
      }
    }
  }
  if (!given_plan && o.resume.empty()) {
    profile_on_nodes();
  } else {
    say("[2/8] no profiling: %s\n", given_plan ? ("the plan comes from " + o.plan_file).c_str()
                                               : "resuming from a checkpoint");
    if (profile) planner::save_profile(*profile, (run / "profile.json").string());
  }
  planner::save_cluster(plan_cluster, (run / "cluster.json").string());
  StopSignals::check("after profiling");
}

void TrainJob::profile_on_nodes() {
  say("[2/8] profiling %s on every device (on its own node, in parallel) and timing the links\n",
      t.model.c_str());
  MeasureOptions mo;
  mo.model = t.model;
  mo.batches = o.profile_batches;
  mo.repeats = o.profile_repeats;
  mo.points = o.profile_points;
  mo.connect_timeout = std::chrono::milliseconds(static_cast<int64_t>(d.connect_timeout_s * 1000));
  mo.profile_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.profile_timeout_s * 1000));
  mo.cancel = &g_stop;
  mo.log = [](const std::string& m) { say("%s\n", m.c_str()); };
  {
    actors::AsteroidConfig caf_config(actors::coordinator_options(cluster));
    caf::actor_system system(caf_config);
    measured = measure_cluster(system, cluster, mo);
  }
  timings["profile"] = measured.profile_wall_s;
  timings["links"] = measured.links_wall_s;
  if (!measured.predicted_batches.empty()) {
    std::string sizes;
    for (int b : measured.predicted_batches) sizes += (sizes.empty() ? "" : ",") + std::to_string(b);
    say("  batch sizes %s predicted by the latency predictor (--profile-points %d; docs/planner.md)\n", sizes.c_str(),
        o.profile_points);
  }
  profile = measured.profile;
  links = measured.links;
  plan_cluster = with_measured_links(cluster, links);
  planner::save_profile(*profile, (run / "profile.json").string());
  say("%s", device_table(plan_cluster, *profile, links, static_cast<int>(t.batch)).c_str());
}

// ---- 3. plan
void TrainJob::choose_plan() {
  if (given_plan) {
    say("[3/8] the plan of %s\n", o.plan_file.c_str());
    plan = *given_plan;
    save_given_plan();
  } else if (!o.resume.empty()) {
    say("[3/8] the plan of the checkpoint %s\n", d.resume_checkpoint.c_str());
  } else {
    say("[3/8] planning (%s)\n", o.strategy.c_str());
    search_plan();
  }
  d.cluster = plan_cluster;
  d.cluster.devices.insert(d.cluster.devices.end(), joining.devices.begin(), joining.devices.end());
  d.cluster.links.insert(d.cluster.links.end(), joining.links.begin(), joining.links.end());
  if (profile) d.profile = profile;
}

// The planner actor (in this process, or on --planner-on's node) ranks the
// search's candidates; its plan.json and table are the run folder's.
void TrainJob::search_plan() {
  messages::PlanRequest request;
  request.cluster_json = planner::cluster_to_json(plan_cluster).dump();
  request.profile_json = planner::profile_to_json(*profile).dump();
  request.strategy = o.strategy;
  request.batch = static_cast<uint32_t>(config.batch);
  request.microbatches = config.search_microbatches ? 0 : static_cast<uint32_t>(config.microbatches);
  request.optimizer = config.optimizer;
  request.wire = o.wire;
  request.codec_block = config.codec_block;
  request.rank = o.rank;
  request.min_gain = o.min_gain;
  messages::PlanResult answer;
  {
    actors::AsteroidConfig caf_config(actors::coordinator_options(plan_cluster));
    caf::actor_system system(caf_config);
    actors::ScopedMailbox asker{system};
    const caf::actor planner = actors::spawn_planner(asker, plan_cluster, d.planner_on, std::chrono::seconds(10));
    answer = actors::request_plan(asker, planner, request, std::chrono::minutes(10));
    caf::anon_send_exit(planner, caf::exit_reason::user_shutdown);
  }
  if (answer.plan_json.empty())
    throw std::runtime_error("no " + o.strategy + " plan of " + t.model + " fits on " + cluster_name + ": " +
                             answer.reason);
  const json file = json::parse(answer.plan_json);
  plan = planner::plan_from_json(file, "the planner's plan");
  timings["plan"] = file.value("planning_ms", 0.0) / 1000;
  if (!answer.single_plan_json.empty()) {
    baseline_plan = planner::plan_from_json(json::parse(answer.single_plan_json), "the planner's best device alone");
    out.best_single_device = only_device(*baseline_plan);
    if (baseline_plan->predicted_round_ms > 0)
      out.best_single_samples_per_s = t.batch * 1000.0 / baseline_plan->predicted_round_ms;
  }
  say("%s", answer.explanation.c_str());
  planner::write_json_file(file, (run / "plan.json").string());
  std::ofstream(run / "plan.txt") << answer.explanation;
}

// plan.json of a given plan; with a given profile, also its prediction and
// the best single device.
void TrainJob::save_given_plan() {
  if (!profile) {
    planner::save_plan(plan, (run / "plan.json").string());
    return;
  }
  // Predictions and the best single device from the given profile.
  const planner::PlanResult single = planner::plan_single(planner::ProfileTables(plan_cluster, *profile), config);
  if (single.feasible) {
    out.best_single_device = only_device(single.plan);
    out.best_single_samples_per_s = t.batch * 1000.0 / single.evaluation.round_ms;
    baseline_plan = single.plan;
  }
  const planner::Evaluation ev = planner::evaluate(plan, plan_cluster, *profile, {config.optimizer});
  plan.predicted_round_ms = ev.round_ms;
  say("%s", planner::explain_plan(plan, ev).c_str());
  planner::save_plan(plan, (run / "plan.json").string(), planner::evaluation_to_json(ev, config.optimizer));
}

// ---- 3b. the probe: the model's choice against the best device alone, measured
void TrainJob::probe() {
  if (o.probe_rounds > 0 && o.strategy == "hpp" && !given_plan && o.resume.empty() && faults.empty() &&
      baseline_plan && device_count(plan) > 1) {
    probe_plan_against_single();
    StopSignals::check("after the probe");
  }
  // The prediction is the trained plan's, so it is taken after the probe.
  if (plan.predicted_round_ms > 0) out.predicted_samples_per_s = plan.batch * 1000.0 / plan.predicted_round_ms;
}

void TrainJob::probe_plan_against_single() {
  say("  probing: this plan and %s alone, %lld rounds each (the first %zu are warm-up)\n",
      out.best_single_device.c_str(), (long long)o.probe_rounds, kWarmupRounds);
  const auto t0 = Clock::now();
  out.probe.rounds = o.probe_rounds;
  out.probe.plan_samples_per_s = measure_plan(d, plan, o.probe_rounds, run, "probe-plan");
  out.probe.single_samples_per_s = measure_plan(d, *baseline_plan, o.probe_rounds, run, "probe-single");
  timings["probe"] = seconds_since(t0);
  out.probe.switched = out.probe.plan_samples_per_s <= out.probe.single_samples_per_s * (1 + o.min_gain);
  say("  probe: the plan %.1f samples/s, %s alone %.1f: training %s\n", out.probe.plan_samples_per_s,
      out.best_single_device.c_str(), out.probe.single_samples_per_s,
      (out.probe.switched ? out.best_single_device + " alone (the plan is kept as plan-candidate.json)"
                          : std::string("the plan"))
          .c_str());
  if (out.probe.switched) switch_to_single();
}

// The best device alone becomes plan.json; the planner's plan is kept as
// plan-candidate.json / .txt.
void TrainJob::switch_to_single() {
  fs::rename(run / "plan.json", run / "plan-candidate.json");
  fs::rename(run / "plan.txt", run / "plan-candidate.txt");
  plan = *baseline_plan;
  const planner::Evaluation ev = planner::evaluate(plan, plan_cluster, *profile, {config.optimizer});
  planner::save_plan(plan, (run / "plan.json").string(), planner::evaluation_to_json(ev, config.optimizer));
  std::ofstream(run / "plan.txt") << planner::explain_plan(plan, ev);
}

// ---- 4. deploy and train (5. evaluate)
void TrainJob::train() {
  say("[4/8] deploying and training %s on %s%s\n", t.model.c_str(), cluster_name.c_str(),
      faults.empty() ? "" : (" with " + std::to_string(faults.size()) + " scheduled fault(s)").c_str());
  if (!faults.empty()) {
    injector = std::make_unique<FaultInjector>(*emulated, faults, (run / "faults.jsonl").string(),
                                               [](const std::string& m) { say("\n%s\n", m.c_str()); });
  }
  point_outputs_at_run_folder();
  d.plan = plan;
  if (!o.plan_switches_file.empty()) d.plan_switches = load_plan_switches(o.plan_switches_file);
  FaultInjector* inj = injector.get();
  // A stop signal ends training at the next round boundary with a
  // checkpoint of the last committed round (--resume continues from it).
  d.should_stop = [] { return g_stop.load(); };
  d.status_path = (run / "status.json").string();
  d.before_round = [inj](uint64_t round, supervision::JobSupervisor& job) {
    if (inj) inj->before_round(round, job.plan());
  };
  d.on_event = [inj](const supervision::SupervisionEvent& e, supervision::JobSupervisor& job) {
    if (inj && e.kind == "failure") inj->on_failure(job.plan(), e.devices);
  };
  if (managed) d.summary_strings["env"] = o.env;
  const auto train_t0 = Clock::now();
  out.training = run_distributed_training(d);
  timings["train_and_evaluate"] = seconds_since(train_t0);
  timings["train"] = out.training.train_seconds;
  if (!o.resume.empty()) plan = out.training.final_plan;
  if (injector) injector->finish();
  say("[5/8] test accuracy %.2f %% on %lld samples\n", 100.0 * out.training.test_accuracy,
      (long long)out.training.test_samples);
}

// Metrics, summary, trace and checkpoint go to the run folder unless the
// options put them elsewhere.
void TrainJob::point_outputs_at_run_folder() {
  metrics_path = t.metrics_path.empty() ? (run / "metrics.jsonl").string() : t.metrics_path;
  summary_path = t.summary_path.empty() ? (run / "summary.json").string() : t.summary_path;
  trace_path = d.trace_path.empty() ? (run / "trace.json").string() : d.trace_path;
  t.metrics_path = metrics_path;
  t.summary_path = summary_path;
  t.strategy = plan.strategy;
  d.trace_path = trace_path;
  if (d.checkpoint_every > 0 && d.checkpoint_path.empty()) d.checkpoint_path = (run / "checkpoint.bin").string();
}

// ---- 6. the measured baseline: the best single device alone, same cluster
void TrainJob::measure_baseline() {
  steady = steady_throughput(out.training.committed, kWarmupRounds, plan.batch);
  if (o.baseline_rounds <= 0 || !baseline_plan || out.training.committed.empty()) {
    say("[6/8] no measured baseline (%s)\n", o.baseline_rounds <= 0 ? "--no-baseline" : "no profile to choose the best device by");
    return;
  }
  say("[6/8] measuring the baseline: %s alone, %lld rounds on the same cluster\n", out.best_single_device.c_str(),
      (long long)o.baseline_rounds);
  const auto t0 = Clock::now();
  try {
    if (device_count(plan) == 1 && plan.stages.front().devices.front().id == out.best_single_device) {
      out.best_single_measured_samples_per_s = steady;  // the job was that baseline
    } else {
      out.best_single_measured_samples_per_s = measure_plan(d, *baseline_plan, o.baseline_rounds, run, "baseline");
    }
    if (out.best_single_measured_samples_per_s > 0) out.speedup_measured = steady / out.best_single_measured_samples_per_s;
  } catch (const std::exception& e) {
    say("  the baseline could not run: %s\n", e.what());
  }
  timings["baseline"] = seconds_since(t0);
}

// ---- 7. cluster down (8. the summary follows, with the down time)
void TrainJob::bring_cluster_down() {
  if (!managed) return;
  say("[7/8] bringing the cluster down\n");
  const auto t0 = Clock::now();
  injector.reset();
  home.go_home();
  emulated->down();
  timings["down"] = seconds_since(t0);
}

// ---- 8. the summary: summary.json, the plots, the printed summary
void TrainJob::write_summary() {
  copy_outputs_into_run_folder();
  // summary.json: what run_distributed_training wrote, and the job's own.
  json s = planner::read_json_file(summary_path);
  s["strategy"] = plan.strategy;
  s["env"] = managed ? o.env : "";
  s["cluster"] = managed ? cluster_name : o.cluster_file;
  s["run_dir"] = run_dir;
  s["devices"] = plan_cluster.devices.size();
  add_mechanisms(s);
  add_throughputs(s);
  add_links(s);
  if (injector || !faults.empty()) s["faults_scheduled"] = faults.size();
  out.job_seconds = seconds_since(job_t0);
  timings["job_before_plots"] = out.job_seconds;
  s["timings_s"] = timings;
  planner::write_json_file(s, (run / "summary.json").string());
  if (summary_path != (run / "summary.json").string()) planner::write_json_file(s, summary_path);
}

// The run folder's copies of files written elsewhere.
void TrainJob::copy_outputs_into_run_folder() const {
  copy_into(metrics_path, run / "metrics.jsonl");
  copy_into(trace_path, run / "trace.json");
  if (!d.checkpoint_path.empty()) copy_into(d.checkpoint_path, run / "checkpoint.bin");
}

void TrainJob::add_mechanisms(json& s) const {
  if (have_mechanisms) {
    s["mechanisms"] = {{"cpu", mechanisms.cpu},
                       {"memory", mechanisms.memory},
                       {"net", mechanisms.net},
                       {"latency", mechanisms.latency},
                       {"notes", mechanisms.notes},
                       {"summary", mechanisms.summary()}};
  } else {
    s["mechanisms"] = {{"summary", "not emulated (real devices)"}};
  }
}

void TrainJob::add_throughputs(json& s) const {
  if (out.predicted_samples_per_s > 0) s["predicted_samples_per_s"] = out.predicted_samples_per_s;
  if (out.best_single_samples_per_s > 0) {
    s["best_single_samples_per_s"] = out.best_single_samples_per_s;
    s["best_single_device"] = out.best_single_device;
    s["speedup_over_best_single"] = out.training.samples_per_s / out.best_single_samples_per_s;
    if (out.predicted_samples_per_s > 0)
      s["predicted_speedup_over_best_single"] = out.predicted_samples_per_s / out.best_single_samples_per_s;
  }
  if (out.predicted_samples_per_s > 0) s["measured_over_predicted"] = out.training.samples_per_s / out.predicted_samples_per_s;
  if (steady > 0) s["samples_per_s_after_round_5"] = steady;
  if (out.best_single_measured_samples_per_s > 0) {
    s["best_single_measured_samples_per_s"] = out.best_single_measured_samples_per_s;
    s["speedup_measured"] = out.speedup_measured;
  }
  if (out.probe.rounds > 0) {
    s["probe"] = {{"rounds", out.probe.rounds},
                  {"plan_samples_per_s", out.probe.plan_samples_per_s},
                  {"single_samples_per_s", out.probe.single_samples_per_s},
                  {"switched_to_single", out.probe.switched}};
  }
}

void TrainJob::add_links(json& s) const {
  if (links.empty()) return;
  json l = json::object(), rtt = json::object();
  for (const auto& [id, m] : links) {
    l[id] = m.mbps;
    rtt[id] = m.rtt_ms;
  }
  s["links_mbps"] = l;
  s["link_rtt_ms"] = rtt;
  s["profile_seconds"] = measured.profile_seconds;
}

// Plots (after the cluster is down: they need no node).
void TrainJob::draw_plots() const {
  if (!o.plots) return;
  const auto t0 = Clock::now();
  const auto made = make_plots(run_dir);
  if (!made.empty()) {
    std::string list;
    for (const auto& m : made) list += (list.empty() ? "" : ", ") + m;
    say("plots: %s (%.1f s)\n", list.c_str(), seconds_since(t0));
  }
}

void TrainJob::print_summary() {
  const auto& r = out.training;
  say("[8/8] summary: %s, %s on %s\n", plan.strategy.c_str(), t.model.c_str(), cluster_name.c_str());
  say("  %lld rounds (%lld samples) in %.1f s, final loss %.4f, test accuracy %.2f %% on %lld samples\n",
      (long long)r.rounds, (long long)r.samples, r.train_seconds, r.final_loss, 100.0 * r.test_accuracy,
      (long long)r.test_samples);
  say("  measured throughput:   %8.1f samples/s\n", r.samples_per_s);
  if (out.predicted_samples_per_s > 0)
    say("  predicted (planner):   %8.1f samples/s (measured / predicted = %.2f)\n", out.predicted_samples_per_s,
        r.samples_per_s / out.predicted_samples_per_s);
  if (out.best_single_samples_per_s > 0)
    say("  best single device:    %8.1f samples/s (%s alone, by its profile): speedup %.2fx\n",
        out.best_single_samples_per_s, out.best_single_device.c_str(),
        r.samples_per_s / out.best_single_samples_per_s);
  if (out.best_single_measured_samples_per_s > 0)
    say("  measured baseline:     %8.1f samples/s (%s alone on this cluster, after round %zu): "
        "measured speedup %.2fx (job %.1f samples/s after round %zu)\n",
        out.best_single_measured_samples_per_s, out.best_single_device.c_str(), kWarmupRounds, out.speedup_measured,
        steady, kWarmupRounds);
  for (const auto& f : r.failures) {
    std::string devices;  // empty when a retried recovery did not know which device failed
    for (const auto& d : f.devices) devices += (devices.empty() ? "" : ", ") + d;
    say("  failure of %s in round %llu: %s re-plan, recovered in %.0f ms\n",
        devices.empty() ? "(a device, see interrupted_by)" : devices.c_str(), (unsigned long long)f.round,
        f.replan.c_str(), f.recovery_ms());
  }
  if (have_mechanisms) say("  emulation: %s\n", mechanisms.summary().c_str());
  say("  whole job: %.1f s; run folder: %s\n", seconds_since(job_t0), run_dir.c_str());
  out.job_seconds = seconds_since(job_t0);
}

// The cluster goes down with `emulated` (owning) as this unwinds; note what
// happened where the run's files are.
void TrainJob::clean_up_after(const std::exception& e) {
  std::ofstream(run / "error.txt") << e.what() << "\n";
  injector.reset();
  home.go_home();
  if (emulated && managed) {
    try {
      emulated->down();
    } catch (const std::exception& down_error) {
      spdlog::error("asteroid train: bringing the cluster down failed: {} (try `asteroid cluster down --dir {}`)",
                    down_error.what(), (run / "cluster").string());
    }
  }
}

}  // namespace

TrainJobResult run_train_job(const TrainJobOptions& input) {
  TrainJob job(input);
  job.check_options();
  job.make_run_folder();
  job.stop_on_signals();
  try {
    job.bring_cluster_up();
    job.profile_and_measure_links();
    job.choose_plan();
    job.probe();
    job.train();
    job.measure_baseline();
    job.bring_cluster_down();
    job.write_summary();
    job.draw_plots();
    job.print_summary();
    return std::move(job.out);
  } catch (const std::exception& e) {
    job.clean_up_after(e);
    throw;
  }
}

}  // namespace asteroid::apps
