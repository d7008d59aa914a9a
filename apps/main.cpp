#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "apps/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"Asteroid: hybrid pipeline parallel training on heterogeneous edge devices"};
  app.require_subcommand(0, 1);
  asteroid::apps::add_profile_command(app);
  asteroid::apps::add_plan_command(app);
  asteroid::apps::add_simulate_command(app);
  asteroid::apps::add_train_command(app);
  asteroid::apps::add_node_command(app);
  asteroid::apps::add_cluster_command(app);
  asteroid::apps::add_inject_command(app);
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
