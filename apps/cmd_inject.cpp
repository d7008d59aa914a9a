#include <CLI/CLI.hpp>

#include "apps/commands.h"

namespace asteroid::apps {

void add_inject_command(CLI::App& app) {
  app.add_subcommand("inject", "(not implemented yet)");
}

}  // namespace asteroid::apps
