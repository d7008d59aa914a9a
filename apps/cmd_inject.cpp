// `asteroid inject --dir D ACTION ...`: faults on a running emulated cluster
// (apps/testbed/emulated_cluster.h; docs/testbed.md "Fault injection").
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "apps/commands.h"
#include "apps/testbed/emulated_cluster.h"

namespace asteroid::apps {

void add_inject_command(CLI::App& app) {
  struct InjectCli {
    std::string dir;
    std::string a, b;
    double factor = 1;
  };
  auto c = std::make_shared<InjectCli>();
  const char* env_dir = std::getenv("ASTEROID_CLUSTER_DIR");
  c->dir = env_dir && *env_dir ? env_dir : "asteroid-cluster";
  CLI::App* cmd = app.add_subcommand("inject", "Fault injection on a running emulated cluster");
  cmd->add_option("--dir", c->dir, "Cluster directory")->capture_default_str();
  cmd->require_subcommand(1);

  auto handle = [c] { return testbed::EmulatedCluster::attach(c->dir); };
  auto done = [c](const std::string& what) { std::printf("%s\n", what.c_str()); };

  auto device_action = [&](const char* name, const char* help, auto fn) {
    CLI::App* s = cmd->add_subcommand(name, help);
    s->fallthrough();
    s->add_option("device", c->a, "Device id")->required();
    s->callback([c, handle, done, fn, name] {
      testbed::EmulatedCluster h = handle();
      fn(h, c->a);
      done(std::string(name) + " " + c->a + ": done");
    });
  };
  device_action("kill", "SIGKILL the device's node", [](testbed::EmulatedCluster& h, const std::string& d) { h.inject_kill(d); });
  device_action("freeze", "SIGSTOP the device's node (its sockets stay open)",
                [](testbed::EmulatedCluster& h, const std::string& d) { h.inject_freeze(d); });
  device_action("thaw", "SIGCONT a frozen node", [](testbed::EmulatedCluster& h, const std::string& d) { h.inject_thaw(d); });
  device_action("restore", "Give a slowed device its CPU share back (slow DEV 1)",
                [](testbed::EmulatedCluster& h, const std::string& d) { h.inject_slow(d, 1); });
  device_action("restart", "Start a dead node again (same command, same emulation)",
                [](testbed::EmulatedCluster& h, const std::string& d) { h.inject_restart(d); });

  CLI::App* slow = cmd->add_subcommand("slow", "Divide the device's CPU share by FACTOR (1 restores)");
  slow->fallthrough();
  slow->add_option("device", c->a, "Device id")->required();
  slow->add_option("factor", c->factor, "Slow-down factor (> 0)")->required()->check(CLI::PositiveNumber);
  slow->callback([c, handle, done] {
    testbed::EmulatedCluster h = handle();
    h.inject_slow(c->a, c->factor);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", c->factor);
    done("slow " + c->a + " by " + buf + ": done");
  });

  for (const char* name : {"cut-link", "heal-link"}) {
    bool cut = std::string(name) == "cut-link";
    CLI::App* s = cmd->add_subcommand(
        name, cut ? "Cut the link between A and B (B: a device, 'hub' = the coordinator, '*' = everything)"
                  : "Heal a cut link (same arguments as cut-link)");
    s->fallthrough();
    s->add_option("a", c->a, "Device id")->required();
    s->add_option("b", c->b, "Device id, hub or '*'")->required();
    s->callback([c, handle, done, cut, name] {
      testbed::EmulatedCluster h = handle();
      if (cut)
        h.inject_cut_link(c->a, c->b);
      else
        h.inject_heal_link(c->a, c->b);
      done(std::string(name) + " " + c->a + " " + c->b + ": done");
    });
  }
}

}  // namespace asteroid::apps
