#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <exception>
#include <string>

#include "apps/commands.h"
#include "compute/memory_reuse.h"

int main(int argc, char** argv) {
  // Before any tensor: nodes, jobs and the profiler reuse freed memory
  // instead of faulting it in again every micro-batch (compute/memory_reuse.h).
  asteroid::compute::keep_freed_memory();
  // Log lines go to stderr (spdlog's default logger writes to stdout, where
  // they would mix with the results a script reads).
  spdlog::set_default_logger(spdlog::stderr_color_mt("asteroid"));
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  CLI::App app{"Asteroid: hybrid pipeline parallel training on heterogeneous edge devices"};
  app.require_subcommand(0, 1);
  // Every command takes --log-level (before or after its name): spdlog's
  // level for the log lines on stderr; progress lines, tables and results
  // go to stdout whatever the level.
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "log lines shown: trace, debug, info (default), warn, error, critical, off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.fallthrough();  // inherited by the commands added below
  app.parse_complete_callback([&] { spdlog::set_level(spdlog::level::from_str(log_level)); });
  asteroid::apps::add_profile_command(app);
  asteroid::apps::add_plan_command(app);
  asteroid::apps::add_simulate_command(app);
  asteroid::apps::add_train_command(app);
  asteroid::apps::add_node_command(app);
  asteroid::apps::add_cluster_command(app);
  asteroid::apps::add_inject_command(app);
  asteroid::apps::add_chaos_command(app);
  asteroid::apps::add_serve_command(app);
  asteroid::apps::add_certs_command(app);
  try {
    app.parse(argc, argv);
    if (app.get_subcommands().empty()) {
      std::fputs(app.help().c_str(), stdout);
      return 0;
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asteroid: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
