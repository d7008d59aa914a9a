#include <CLI/CLI.hpp>

#include "apps/commands.h"

namespace asteroid::apps {

void add_node_command(CLI::App& app) {
  app.add_subcommand("node", "(not implemented yet)");
}

}  // namespace asteroid::apps
