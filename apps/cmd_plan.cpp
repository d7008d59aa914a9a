#include <CLI/CLI.hpp>

#include "apps/commands.h"

namespace asteroid::apps {

void add_plan_command(CLI::App& app) {
  app.add_subcommand("plan", "(not implemented yet)");
}

}  // namespace asteroid::apps
