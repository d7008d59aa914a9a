// Adaptive training (docs/runtime.md, "Adaptive training"): the online
// latency model, and the rule that decides whether a new plan is worth its
// move. Pure; the job supervisor feeds the model every committed round's
// compute times (what each device's members measured, Metrics.compute_us)
// and acts on its verdicts.
//
// The model keeps, per device, a scale: how much slower (> 1) or faster
// (< 1) than the job's base profile the device computes now. The running
// plan was made under the scales the model assumed then; every committed
// round, a device's measured time divided by what the plan predicts for it
// under those scales is one ratio, and the scale times the median of the
// device's last `window` ratios is its estimate. A device whose estimate
// stays more than `threshold` away from its assumed scale (either way) for
// `rounds` consecutive rounds has drifted. The supervisor then re-plans
// with learned_profile() and switches when switch_pays(); either way it
// calls assume_estimates() and expect()s the plan in force, so that the
// next verdict needs a further drift. The first round after expect() is
// not judged (start-up: caches, connections), and the first `calibration`
// rounds of the job are only learned: a profile is never exact (this
// machine's runtime computes 1.1-1.5x its profile's times), and acting on
// that would re-plan every job in its first rounds; at their end the
// estimates become the assumed scales.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "planner/types.h"

namespace asteroid::supervision {

class SpeedModel {
 public:
  struct Rules {
    double threshold = 0.3;  // relative departure of the estimate from the assumed scale
    int rounds = 5;          // consecutive rounds of departure before a verdict
    int window = 5;          // ratios the estimate takes the median of
    int calibration = 10;    // the job's first rounds, learned but never a verdict
  };

  SpeedModel() : SpeedModel(Rules()) {}
  explicit SpeedModel(Rules rules);

  // The plan in force: its predicted compute time per device for one round,
  // under the assumed scales. Forgets the ratios measured before.
  void expect(std::map<std::string, double> predicted_ms);
  // One committed round's measured compute time per device. Returns the
  // devices that drifted with this round (empty: none).
  std::vector<std::string> observe(uint64_t round, const std::map<std::string, double>& measured_ms);

  // A device the plan leaves idle, measured by a short profile (its times
  // against the base profile's, a median over layers): the estimate becomes
  // that times the runtime's bias the calibration found (the median of the
  // measured devices' scales then: profiles and training differ alike on
  // every device). True when it drifted from the assumed scale (one probe
  // suffices: it is already a median over layers and repeats).
  bool observe_probe(const std::string& device, double profile_scale);

  // Per device: the scale the plan in force assumes, and the estimate now
  // (the assumed scale while nothing was measured).
  const std::map<std::string, double>& assumed() const { return assumed_; }
  double estimate(const std::string& device) const;
  std::map<std::string, double> estimates() const;
  // The estimates become the assumed scales (the predictions expected
  // scale with them).
  void assume_estimates();
  bool calibrating() const { return calibrated_ < rules_.calibration; }

  // `base` with every device's compute and update times multiplied by its
  // `scales` entry (and its codec speeds divided by it); devices without
  // an entry keep theirs.
  static planner::Profile scaled(const planner::Profile& base, const std::map<std::string, double>& scales);

  const Rules& rules() const { return rules_; }

 private:
  struct Device {
    double predicted_ms = 0;
    std::deque<double> ratios;  // newest last, at most window
    int streak = 0;
  };
  Rules rules_;
  std::map<std::string, double> assumed_;
  std::map<std::string, Device> devices_;
  bool started_ = false;  // the first round after expect() was seen
  int calibrated_ = 0;    // rounds observed for the calibration
  double bias_ = 1;       // the runtime's time against the profile's, from the calibration
  std::map<std::string, double> probed_;  // idle devices' estimates from probes
};

// A switch pays when the time it saves over `horizon_rounds` rounds exceeds
// the time it costs: (current - new) * horizon > migration.
bool switch_pays(double current_round_ms, double new_round_ms, double migration_ms, uint64_t horizon_rounds);

// What a switch costs beside the bytes it moves (flush, abort, redeploy),
// learned from the switches measured. A switch that only re-assigns the
// members in place costs little (about 0.2 s on this machine); one that
// brings a device into the plan costs that device's start: its stage
// actor, its model and, for a first stage, its training data, seconds on a
// slow device (7.4 s for three Nanos joining fmnist-resnet's data-parallel
// stage on env C). So the estimate for a switch is the in-place overhead
// plus the largest start cost of the devices it brings in: each device's
// last measured one, else `unknown_join_ms` (the job's first deployment).
// Pure.
class SwitchCosts {
 public:
  SwitchCosts(double in_place_ms, double unknown_join_ms)
      : in_place_ms_(in_place_ms), unknown_join_ms_(unknown_join_ms) {}
  double estimate_ms(const std::set<std::string>& joining) const;
  // A switch that brought `joining` in took `overhead_ms` beside its
  // transfers.
  void measured(const std::set<std::string>& joining, double overhead_ms);
  void set_unknown_join_ms(double ms) { unknown_join_ms_ = ms; }

 private:
  double in_place_ms_, unknown_join_ms_;
  std::map<std::string, double> join_ms_;
};

// How long each device's speed has lately held: the rounds between the
// drift verdicts that named it (switch or not), the job's start counting as
// one; a verdict within `detection` rounds of the device's last is the same
// change settling, not a new spell. A plan made for the speeds of now saves
// time only until they change again, and a change is seen only `detection`
// rounds later (the drift's streak and the round after a switch that is not
// judged): when a device's speed swings faster than the horizon (a load that
// comes and goes), a switch it causes is judged over the spell its speed has
// lately had, less the detection. Per device, because one device's change
// that brings others in (whose speeds the profile then mispredicts: they
// drift once, soon after) is no swing. The horizon for a switch at round
// `now` caused by `devices`: the configured one, or the shortest of their
// own: once `kept` spells of a device ended, when the median of them (or
// its current spell so far, if longer: a speed that has held says the
// swings stopped) is shorter than the configured one, that spell less
// `detection`, at least 0. Pure.
class SpeedSpells {
 public:
  explicit SpeedSpells(uint64_t detection, size_t kept = 3) : detection_(detection), kept_(kept) {}
  // The job started at `round`: every device's first spell starts there.
  void started(uint64_t round) { start_ = round; }
  // A drift of `devices` was judged at `round`.
  void drifted(uint64_t round, const std::vector<std::string>& devices);
  uint64_t horizon(uint64_t configured, uint64_t now, const std::vector<std::string>& devices) const;
  // A device's last spells, oldest first (at most `kept`).
  std::deque<uint64_t> spells(const std::string& device) const;

 private:
  struct Device {
    uint64_t since = 0;  // the round its current spell started
    std::deque<uint64_t> spells;
  };
  uint64_t detection_;
  size_t kept_;
  uint64_t start_ = 0;
  std::map<std::string, Device> devices_;
};

}  // namespace asteroid::supervision
