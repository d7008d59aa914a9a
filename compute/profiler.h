// The per-layer profiler: what the planner needs to know about a model on
// this machine (../docs/COST_MODEL.md): for every layer its forward and
// backward time at several batch sizes, its weight bytes, its output bytes
// per sample and the activation bytes per sample it keeps for backward;
// and per optimizer, each layer's update after a round.
//
// How it measures (docs/compute.md has the details):
// - times: each layer runs alone on the output of the layers before it, with
//   autograd on (as in training); forward = the layer's forward including
//   building its graph, backward = autograd backward from a gradient of its
//   output to its parameters and its input (no input gradient for layer 0).
//   The runs are passes over every (batch size, layer): `warmup` passes
//   are discarded, then each point keeps the median of its `repeats` runs,
//   which are spread over the whole profile (a burst of load from other
//   processes shifts one run of many points, not every run of a few).
//   Times are then made non-decreasing in the batch size (a running max), as
//   the cost model assumes.
// - stash_bytes: CPU bytes allocated during the layer's forward that are
//   still alive after it while its output is held (saved activations plus the
//   output itself), counted by a counting CPU allocator that the profiler
//   installs for the rest of the process, divided by the batch size.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "planner/types.h"

namespace asteroid::compute {

struct ProfileOptions {
  std::vector<int> batches = {1, 2, 4, 8, 16, 32, 64};  // strictly increasing, >= 1
  int repeats = 5;     // measured runs per (layer, batch size); the median is kept
  int warmup = 1;      // runs discarded before them
  int threads = 1;     // at::set_num_threads
  uint64_t seed = 0;   // weights and synthetic inputs
  // Time each run by the CPU time it used (the calling thread's with one
  // thread, the process's otherwise) instead of wall time: what the layer
  // costs at full speed, whatever CPU quota or other load the process is
  // under. A node under a CPU share divides these by its share.
  bool cpu_time = false;
  // Also time every lossy wire codec's encode and decode (profile.json
  // "codecs"; the planner offers a codec only where it was measured).
  bool codecs = true;
  // Also time every optimizer's update of every layer (profile.json
  // "update_ms": the step and the copies of the new state a stage keeps).
  bool updates = true;
};

// Encode and decode speed of every lossy wire codec on this machine, on
// 1 MB of float32 values shaped like activations (half of them zero, as
// after a ReLU): MB of float32 per second, median of `repeats` runs, on the
// clock ProfileOptions says.
std::map<planner::Codec, planner::CodecSpeed> profile_codecs(const ProfileOptions& options = {});

// Weight, output and stash bytes of every layer (no timing).
std::vector<planner::LayerInfo> measure_layers(const std::string& model, int batch = 8,
                                               uint64_t seed = 0);

// The full profile of `model` on this machine under the name `device_id`.
// Throws std::invalid_argument for an unknown model or bad options.
planner::Profile profile_model(const std::string& model, const std::string& device_id,
                               const ProfileOptions& options = {});

// "1,2,4,8" -> {1, 2, 4, 8}; throws std::invalid_argument unless the list is
// strictly increasing positive integers.
std::vector<int> parse_batch_list(const std::string& text);

}  // namespace asteroid::compute
