// The learned latency predictor (docs/planner.md, "Predicted profiles"): a
// small regression fitted on every point a profile measured, that predicts
// the points it did not measure, so that devices profile a few batch sizes
// (`--profile-points`) and a device can join with a short profile.
//
// Model: the time of layer l for b samples on device d is
//     s_d * (a_l + c_l * b)
// (forward and backward each their own a and c): a per-call cost and a
// per-sample cost of each layer, shared by every device, times the device's
// scale (its speed against the others). It is fitted by alternating
// weighted least squares on relative errors (a layer of 0.01 ms counts as
// much as one of 100 ms): with the scales fixed, each layer's (a, c) is a
// 2x2 linear solve; with the layers fixed, each scale is a closed form.
// The first device's scale is 1. Pure; no Torch.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "planner/types.h"

namespace asteroid::planner {

class LatencyPredictor {
 public:
  // Fits on every measured point of `profile` (devices may have measured
  // different batch sizes; a device needs one point per layer at least).
  // Throws std::invalid_argument when a layer has no point, or no device
  // has two batch sizes (the per-sample cost would be unknown).
  explicit LatencyPredictor(const Profile& profile);

  double fwd_ms(const std::string& device, int layer, int batch) const;
  double bwd_ms(const std::string& device, int layer, int batch) const;
  double scale(const std::string& device) const;

  // `profile` with every device's tables at `batches`: the points it
  // measured kept; the others, for a device that measured two batch sizes
  // or more, on the lines between its own points (the cost model's rule:
  // on this machine's profiles that beats the shared model for the same
  // device, docs/planner.md), else predicted (a joining device's short
  // profile).
  Profile completed(const Profile& profile, const std::vector<int>& batches) const;

 private:
  struct Line {
    double a = 0, c = 0;  // per call, per sample (ms)
    double at(int batch) const { return a + c * batch; }
  };
  std::vector<Line> fwd_, bwd_;  // by layer
  std::map<std::string, double> scale_;
};

// `n` of `batches` (sorted, >= 1 each) to measure: the smallest, the
// largest and the others spread evenly on a log scale; all when n >= size.
std::vector<int> spread_points(const std::vector<int>& batches, int n);

}  // namespace asteroid::planner
