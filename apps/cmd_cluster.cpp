// `asteroid cluster up|down|status|exec|presets`: the emulated edge cluster
// on this machine (apps/testbed/, docs/testbed.md). Hidden helpers that the
// testbed runs itself: relay, probe-link, burn, dummy-node.
#include <CLI/CLI.hpp>

#include <signal.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "apps/commands.h"
#include "apps/testbed/emulated_cluster.h"
#include "apps/testbed/presets.h"
#include "apps/testbed/relay.h"
#include "apps/testbed/tools.h"

namespace asteroid::apps {
namespace {

std::string default_dir() {
  const char* d = std::getenv("ASTEROID_CLUSTER_DIR");
  return d && *d ? d : "asteroid-cluster";
}

std::vector<std::string> split_words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> w;
  std::string x;
  while (in >> x) w.push_back(x);
  return w;
}

std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) { g_interrupted = true; }

struct UpCli {
  std::string env, cluster_file, dir = default_dir();
  double bandwidth = 0;  // 0: the preset's / file's own
  double cpu_budget = 0;
  double latency_ms = 0.5;
  std::string cpu = "auto", net = "auto";
  std::string node_command;
  bool no_memory_limit = false;
  bool no_tls = false;
  double ready_timeout_s = 60;
  int base_port = 7100;
};

void run_up(const UpCli& c) {
  if (c.env.empty() == c.cluster_file.empty())
    throw std::invalid_argument("cluster up: give exactly one of --env A|B|C|D or --cluster FILE");
  testbed::ClusterSpec spec;
  if (!c.env.empty()) {
    spec = testbed::preset_spec(c.env, c.bandwidth > 0 ? c.bandwidth : 1000, c.cpu_budget);
  } else {
    spec = testbed::file_spec(c.cluster_file);
    if (c.bandwidth > 0) spec.cluster.default_bandwidth_mbps = c.bandwidth;
  }
  testbed::LaunchOptions o;
  o.dir = c.dir;
  std::string node_cmd = c.node_command;
  if (node_cmd.empty())
    if (const char* e = std::getenv("ASTEROID_NODE_COMMAND")) node_cmd = e;
  o.node_command = split_words(node_cmd);
  o.cpu = testbed::parse_cpu_mode(c.cpu);
  o.net = testbed::parse_net_mode(c.net);
  o.memory_limits = !c.no_memory_limit;
  o.tls = !c.no_tls;
  o.latency_ms = c.latency_ms;
  o.base_port = c.base_port;
  o.ready_timeout = testbed::Millis(static_cast<long long>(c.ready_timeout_s * 1000));
  o.die_with_parent = false;  // the nodes outlive this command
  o.log = [](const std::string& m) { spdlog::info("{}", m); };
  o.cancel = &g_interrupted;
  // Ctrl-C or SIGTERM during start-up: stop, clean up, exit non-zero.
  struct sigaction sa {}, old_int{}, old_term{};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  try {
    testbed::EmulatedCluster cluster = testbed::EmulatedCluster::up(spec, o);
    cluster.detach();
    ::sigaction(SIGINT, &old_int, nullptr);
    ::sigaction(SIGTERM, &old_term, nullptr);
    std::fputs(cluster.status().table().c_str(), stdout);
    std::printf("cluster.json: %s/cluster.json\n", cluster.dir().c_str());
    if (cluster.mechanisms().net == "netns-tc")
      std::printf("reach the nodes from the hub namespace: asteroid cluster exec --dir %s --hub -- CMD...\n",
                  c.dir.c_str());
    std::printf("stop with: asteroid cluster down --dir %s\n", c.dir.c_str());
  } catch (...) {
    ::sigaction(SIGINT, &old_int, nullptr);
    ::sigaction(SIGTERM, &old_term, nullptr);
    throw;
  }
}

}  // namespace

void add_cluster_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "cluster", "Emulated edge cluster on this machine: up, down, status, exec, presets (docs/testbed.md)");
  cmd->require_subcommand(1);

  // ---- up ----
  auto up = std::make_shared<UpCli>();
  CLI::App* u = cmd->add_subcommand("up", "Start one node per device (in the background) and write cluster.json");
  u->add_option("--env", up->env, "Preset: A (5 Nano), B (3 NX + 2 TX2), C (1 NX, 2 TX2, 3 Nano), D (1 TX2, 3 Nano)");
  u->add_option("--cluster", up->cluster_file, "A cluster.json to emulate instead of a preset");
  u->add_option("--bandwidth", up->bandwidth, "Link bandwidth in Mbit/s (default 1000; 100 = the paper's slow setting)")
      ->check(CLI::PositiveNumber);
  u->add_option("--dir", up->dir, "Cluster directory (cluster.json, nodes.json, logs/)")->capture_default_str();
  u->add_option("--cpu-budget", up->cpu_budget, "Cores the whole cluster may use (default 3/4 of the cores)")
      ->check(CLI::PositiveNumber);
  u->add_option("--latency-ms", up->latency_ms, "One-way latency added on each device link")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  u->add_option("--cpu", up->cpu, "CPU emulation: auto | cgroup | throttle | none")->capture_default_str();
  u->add_option("--net", up->net, "Link emulation: auto | netns | relay | none")->capture_default_str();
  u->add_option("--node-command", up->node_command,
                "Node program (words split on spaces; default: this asteroid binary's `node`, or "
                "$ASTEROID_NODE_COMMAND); the launcher appends --port --host --id --memory-mb [--cpu-share]");
  u->add_flag("--no-memory-limit", up->no_memory_limit, "No cgroup memory limit per node");
  u->add_flag("--no-tls", up->no_tls,
              "plain TCP between the nodes (default: mutual TLS with the cluster's own certificates in DIR/tls)");
  u->add_option("--ready-timeout", up->ready_timeout_s, "Seconds for all nodes to accept connections")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  u->add_option("--base-port", up->base_port, "Port every node listens on (network namespaces)")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  u->callback([up] { run_up(*up); });

  // ---- down ----
  auto down_dir = std::make_shared<std::string>(default_dir());
  auto grace = std::make_shared<double>(5.0);
  CLI::App* d = cmd->add_subcommand("down", "Stop the nodes and remove namespaces, cgroups and qdiscs");
  d->add_option("--dir", *down_dir, "Cluster directory")->capture_default_str();
  d->add_option("--grace", *grace, "Seconds between SIGTERM and SIGKILL")->capture_default_str();
  d->callback([down_dir, grace] {
    testbed::EmulatedCluster c = testbed::EmulatedCluster::attach(*down_dir);
    c.set_stop_grace(testbed::Millis(static_cast<long long>(*grace * 1000)));
    c.down();
    std::printf("cluster in %s is down\n", c.dir().c_str());
  });

  // ---- status ----
  auto st_dir = std::make_shared<std::string>(default_dir());
  auto st_json = std::make_shared<bool>(false);
  CLI::App* s = cmd->add_subcommand("status", "Nodes, their state and the emulation mechanisms");
  s->add_option("--dir", *st_dir, "Cluster directory")->capture_default_str();
  s->add_flag("--json", *st_json, "Print nodes.json instead of a table");
  s->callback([st_dir, st_json] {
    testbed::EmulatedCluster c = testbed::EmulatedCluster::attach(*st_dir);
    if (*st_json) {
      std::FILE* f = std::fopen((c.dir() + "/nodes.json").c_str(), "r");
      char buf[4096];
      size_t n;
      while (f && (n = std::fread(buf, 1, sizeof buf, f)) > 0) std::fwrite(buf, 1, n, stdout);
      if (f) std::fclose(f);
    } else {
      std::fputs(c.status().table().c_str(), stdout);
    }
  });

  // ---- exec ----
  struct ExecCli {
    std::string dir = default_dir(), device;
    bool hub = false;
    std::vector<std::string> command;
  };
  auto ex = std::make_shared<ExecCli>();
  CLI::App* e = cmd->add_subcommand("exec", "Run a command as an emulated device (its namespace and cgroup) or in the hub");
  e->add_option("--dir", ex->dir, "Cluster directory")->capture_default_str();
  auto* dev_opt = e->add_option("--device", ex->device, "Device id");
  auto* hub_opt = e->add_flag("--hub", ex->hub, "The hub namespace (where the coordinator reaches every node)");
  dev_opt->excludes(hub_opt);
  e->add_option("command", ex->command, "-- CMD ARGS...")->required();
  e->callback([ex] {
    if (ex->device.empty() && !ex->hub) throw std::invalid_argument("cluster exec: give --device ID or --hub");
    testbed::exec_as_device(ex->dir, ex->hub ? "hub" : ex->device, ex->command);
  });

  // ---- presets ----
  auto pr_budget = std::make_shared<double>(0);
  CLI::App* p = cmd->add_subcommand("presets", "The presets and their CPU shares on this machine");
  p->add_option("--cpu-budget", *pr_budget, "Cores the whole cluster may use")->check(CLI::PositiveNumber);
  p->callback([pr_budget] {
    testbed::PresetOptions o;
    o.cpu_budget_cores = *pr_budget;
    std::fputs(testbed::presets_table(o).c_str(), stdout);
  });

  // ---- hidden helpers ----
  auto relay_cfg = std::make_shared<std::string>();
  CLI::App* r = cmd->add_subcommand("relay", "")->group("");  // hidden
  r->add_option("--config", *relay_cfg)->required();
  r->callback([relay_cfg] { std::exit(testbed::run_relay_daemon(*relay_cfg)); });

  struct ProbeCli {
    bool listen = false;
    std::string host = "0.0.0.0", connect;
    int port = 0;
    double seconds = 3, bytes = 0, timeout = 60;
  };
  auto pc = std::make_shared<ProbeCli>();
  CLI::App* pl = cmd->add_subcommand("probe-link", "")->group("");
  pl->add_flag("--listen", pc->listen);
  pl->add_option("--host", pc->host);
  pl->add_option("--port", pc->port);
  pl->add_option("--connect", pc->connect);
  pl->add_option("--seconds", pc->seconds);
  pl->add_option("--bytes", pc->bytes);
  pl->add_option("--timeout", pc->timeout);
  pl->callback([pc] {
    if (pc->listen)
      std::exit(testbed::run_probe_receiver(pc->host, static_cast<uint16_t>(pc->port), pc->timeout));
    auto colon = pc->connect.rfind(':');
    if (colon == std::string::npos) throw std::invalid_argument("probe-link: --listen or --connect HOST:PORT");
    std::exit(testbed::run_probe_sender(pc->connect.substr(0, colon),
                                        static_cast<uint16_t>(std::stoi(pc->connect.substr(colon + 1))),
                                        pc->seconds, pc->bytes));
  });

  auto iters = std::make_shared<long long>(100000000);
  CLI::App* b = cmd->add_subcommand("burn", "")->group("");
  b->add_option("--iterations", *iters);
  b->callback([iters] { std::exit(testbed::run_burn(*iters)); });

  struct DummyCli {
    std::string host = "127.0.0.1", id = "node";
    int port = 0;
    double memory_mb = 0, cpu_share = 0;
  };
  auto dn = std::make_shared<DummyCli>();
  CLI::App* dd = cmd->add_subcommand("dummy-node", "")->group("");
  dd->add_option("--host", dn->host);
  dd->add_option("--port", dn->port);
  dd->add_option("--id", dn->id);
  dd->add_option("--memory-mb", dn->memory_mb);
  dd->add_option("--cpu-share", dn->cpu_share);
  dd->callback([dn] { std::exit(testbed::run_dummy_node(dn->host, static_cast<uint16_t>(dn->port), dn->id)); });
}

}  // namespace asteroid::apps
