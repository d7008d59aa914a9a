// Distributed training of a plan on running nodes, as `asteroid train
// --cluster c.json --plan p.json` does: deploy, run the rounds with a
// progress line, write the same metrics and summary files as single-device
// training (plus the trace), evaluate test accuracy at the end.
#pragma once

#include <string>

#include "compute/single_trainer.h"
#include "planner/types.h"

namespace asteroid::apps {

struct DistributedOptions {
  compute::TrainOptions train;  // model, epochs/rounds, batch, seed, optimizer, outputs
  planner::Cluster cluster;
  planner::Plan plan;
  std::string trace_path;       // Perfetto trace (empty: none)
  bool print_grid = false;      // print the step x stage grid of the last round
  double connect_timeout_s = 5;
};

// Throws std::invalid_argument for options that do not fit together (the
// plan's batch differs from --batch, ...) and actors::JobError when the job
// cannot run (unreachable device, refused stage, failed round).
compute::TrainResult run_distributed_training(const DistributedOptions& options);

}  // namespace asteroid::apps
