#include <CLI/CLI.hpp>

#include "apps/commands.h"

namespace asteroid::apps {

void add_simulate_command(CLI::App& app) {
  app.add_subcommand("simulate", "(not implemented yet)");
}

}  // namespace asteroid::apps
