#include <CLI/CLI.hpp>

#include "apps/commands.h"

namespace asteroid::apps {

void add_cluster_command(CLI::App& app) {
  app.add_subcommand("cluster", "(not implemented yet)");
}

}  // namespace asteroid::apps
