#include <CLI/CLI.hpp>

#include "apps/commands.h"

namespace asteroid::apps {

void add_train_command(CLI::App& app) {
  app.add_subcommand("train", "(not implemented yet)");
}

}  // namespace asteroid::apps
