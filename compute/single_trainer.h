// Single-device training: the whole chain [0, L) as one stage, the whole
// mini-batch as one micro-batch, in this process, no actors. It is the
// reference every distributed run is compared with: the same seed gives the
// same initial weights, the same sample order (round_indices) and the same
// loss convention (sum of cross entropy / mini-batch size).
#pragma once

#include <cstdint>
#include <string>

#include "compute/optimizer.h"
#include "compute/training_log.h"

namespace asteroid::compute {

struct TrainOptions {
  std::string strategy = "single";
  std::string model = "fmnist-cnn";
  int64_t epochs = 1;
  int64_t batch = 64;          // mini-batch (round) size
  uint64_t seed = 7;           // initial weights and sample order
  int64_t rounds = 0;          // stop after this many rounds (0: all epochs)
  OptimizerConfig optimizer;   // default: momentum 0.9, lr 0.05
  std::string data_dir;        // Fashion-MNIST files; empty: the Debian package's directory
  int threads = 1;             // at::set_num_threads
  std::string metrics_path;    // JSON Lines, one per round (empty: none)
  std::string summary_path;    // summary JSON (empty: none)
  std::string weights_out;     // final flat weights (compute/weights_io.h; empty: none)
  int64_t test_samples = 0;    // evaluate on the first N test samples (0: all)
  ProgressLine::Mode progress = ProgressLine::Mode::automatic;
};

struct TrainResult {
  int64_t rounds = 0;
  int64_t samples = 0;          // training samples processed
  double train_seconds = 0;     // the training loop alone
  double samples_per_s = 0;
  double final_loss = 0;        // mean loss of the last round
  double test_accuracy = 0;     // fraction
  double test_loss = 0;
  int64_t test_samples = 0;
};

// Validates the options, opens every output file (so a bad path fails
// before training), trains, evaluates on the test split, writes the outputs.
// Throws std::invalid_argument (bad option, unknown model) or
// std::runtime_error (missing data, unwritable file) with a message naming
// the culprit.
TrainResult run_single_training(const TrainOptions& options);

}  // namespace asteroid::compute
