#include <CLI/CLI.hpp>

#include "apps/commands.h"

namespace asteroid::apps {

void add_profile_command(CLI::App& app) {
  app.add_subcommand("profile", "(not implemented yet)");
}

}  // namespace asteroid::apps
