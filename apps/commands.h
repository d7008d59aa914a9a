// The `asteroid` command line: one sub-command per file (cmd_*.cpp), each
// registering itself on the root CLI11 app. A command reports bad input by
// throwing std::exception with a message naming what was wrong; main prints
// it and exits non-zero.
#pragma once

namespace CLI {
class App;
}

namespace asteroid::apps {

void add_profile_command(CLI::App& app);   // per-layer profile of a model
void add_plan_command(CLI::App& app);      // plan a model on a cluster
void add_simulate_command(CLI::App& app);  // simulate a plan's round
void add_train_command(CLI::App& app);     // train (single device or distributed)
void add_node_command(CLI::App& app);      // one device's node process
void add_cluster_command(CLI::App& app);   // emulated cluster: up, down, exec
void add_inject_command(CLI::App& app);    // fault injection on an emulated cluster
void add_chaos_command(CLI::App& app);     // a seeded chaos campaign
void add_certs_command(CLI::App& app);     // certificates for mutual TLS
void add_serve_command(CLI::App& app);     // the training service and its clients (submit, jobs, cancel)

}  // namespace asteroid::apps
