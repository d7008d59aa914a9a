// Tells a straggler from a busy or merely slow machine. Every committed
// round, each device's measured compute time (its forwards and backwards,
// Metrics.compute_us) is divided by what the plan predicted for it; a
// device whose ratio stays above `factor` times the median ratio of the
// round's other devices for `rounds` consecutive rounds is a straggler: alive,
// but far slower than planned relative to the others (a load that slows
// every device alike leaves the plan balanced and is no straggler). It is
// reported once, and reported back once its ratio has stayed under the
// factor for `rounds` rounds. A device without a prediction (a plan made
// without a profile) takes as its prediction the median of its first
// `rounds` measured rounds. The first round after a deployment is not
// judged (start-up). Pure; the job supervisor feeds it and turns its
// verdicts into `straggler` / `straggler-end` events.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace asteroid::supervision {

class StragglerWatch {
 public:
  struct Rules {
    double factor = 3.0;  // how many times the median ratio makes a device slow
    int rounds = 3;       // consecutive rounds before a verdict, either way
  };
  struct Verdict {
    std::string device;
    bool straggling = false;  // true: became a straggler; false: is one no more
    uint64_t round = 0;       // the round that decided it
    double measured_ms = 0, predicted_ms = 0;
    double ratio_to_median = 0;  // (measured / predicted) over the median of the other devices' ratios
  };

  // `predicted_ms`: per device, the compute time the plan predicts for one
  // round (absent or <= 0: learned from the first rounds).
  explicit StragglerWatch(Rules rules, std::map<std::string, double> predicted_ms = {});

  // The compute time of every device of one committed round.
  std::vector<Verdict> observe(uint64_t round, const std::map<std::string, double>& measured_ms);

  bool straggling(const std::string& device) const;

 private:
  struct Device {
    double predicted_ms = 0;
    std::vector<double> calibration;  // measured rounds, while learning the prediction
    int slow_streak = 0, normal_streak = 0;
    bool straggling = false;
  };
  Rules rules_;
  std::map<std::string, Device> devices_;
  bool warmed_up_ = false;
};

}  // namespace asteroid::supervision
