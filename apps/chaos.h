// A seeded chaos campaign (`asteroid chaos`, scripts/chaos.sh): one long
// training on an emulated cluster under a random schedule of faults, judged
// against a fault-free run of the same job that trains every round on the
// plan the campaign committed it on (so the float sums are the same). The verdict:
// every round committed exactly once and in order, and, the wire being
// exact, the same loss in every round and the same final weights (relative
// difference at most 1e-4). The schedule, both run folders and the report
// (report.json, report.md: each fault, each failure with its detection and
// recovery, rounds redone) stay in the campaign's folder.
//
// The pure parts (the draw, the plan, the verdict) are separate from the
// runner, which starts `asteroid train` twice as child processes.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "apps/fault_schedule.h"
#include "planner/types.h"

namespace asteroid::apps {

// What a campaign draws. A fault is one device taken away (killed, frozen,
// slowed, cut off); the restores that follow (restart, thaw, restore, heal)
// are not counted. Episodes, each `spacing` rounds after the previous one,
// are drawn from: kill then restart, freeze then thaw, slow (x2-x4) then
// restore, cut-link from the coordinator then heal, cut-link between two
// pipeline neighbours then heal (a partition), two kills in the same
// round then both restarts, a kill and a second kill during its recovery
// then both restarts. Victims are aliases (fault_schedule.h), resolved when
// injected to a device whose loss the replicas allow; the restores come
// `spacing` / 2 rounds after their fault.
struct ChaosDraw {
  int faults = 8;
  uint64_t seed = 1;
  uint64_t first_round = 10;
  uint64_t spacing = 12;
};

// The schedule, in round order (deterministic for a draw).
std::vector<Fault> draw_chaos_schedule(const ChaosDraw& draw);
// Rounds a campaign trains: the last round its schedule names + spacing.
uint64_t chaos_rounds(const std::vector<Fault>& schedule, uint64_t spacing);
// The schedule as faults.json reads it.
nlohmann::json faults_to_json(const std::vector<Fault>& schedule);

// The campaign's plan: three stages, layers split evenly: the first device
// alone, a group of the next two, a group of the others (the two kinds of
// stage recovery treats differently: a single-device stage comes back from
// its replica holder, a group re-splits among its survivors). Fewer than four
// devices: one device per stage. REQUIRES: at least 3 devices and layers.
planner::Plan chaos_plan(const std::vector<std::string>& devices, int layers, int batch, int microbatches);

// One committed-round line of metrics.jsonl, in file order.
struct CommittedRound {
  uint64_t round = 0;
  double loss = 0;
};

struct ChaosVerdict {
  bool passed = false;
  std::vector<std::string> problems;  // each names a round or what differed
  uint64_t rounds_expected = 0;
  uint64_t rounds_committed = 0;     // round lines in the chaos run
  uint64_t rounds_lost = 0;          // expected rounds never committed
  double max_loss_rel_diff = 0;      // against the reference, over common rounds
  int64_t first_departure = -1;      // first round whose loss differs by more than 1e-6 (-1: none)
  double weights_rel_diff = 0;       // |w - w_ref| / |w_ref|
};

// The verdict on a chaos run's committed rounds against the reference's.
ChaosVerdict judge_chaos(const std::vector<CommittedRound>& chaos, const std::vector<CommittedRound>& reference,
                         uint64_t rounds, double weights_rel_diff, double tolerance = 1e-4);

// The round lines of a metrics.jsonl (event lines skipped). Throws
// std::runtime_error naming the file and line when one does not parse.
std::vector<CommittedRound> read_committed_rounds(const std::string& metrics_path);

// The plan each committed round of a run was trained on, as switches for
// the reference (`asteroid train --plan-switches`): every replan or rejoin
// line of a metrics.jsonl says from which round its plan trains
// (`from_round`); a start drops the later ones (the job went back to it);
// `initial` trains until the first. {"switches": [{"round": R, "plan":
// {...}}]}, one entry where the plan's stages change.
nlohmann::json plan_switches_from_metrics(const std::string& metrics_path, const planner::Plan& initial);

struct ChaosOptions {
  ChaosDraw draw;
  std::string env = "C";
  double bandwidth_mbps = 1000;
  std::string model = "fmnist-cnn";
  int batch = 64;
  int microbatches = 4;
  std::string out;                        // the campaign's folder (REQUIRED)
  std::string asteroid_bin;               // empty: this executable
  double run_timeout_s = 3600;            // each of the two runs
  // The verdict's bound on the relative difference of each round's loss and
  // of the final weights.
  double tolerance = 1e-4;
  std::vector<std::string> train_args;    // more `asteroid train` flags, for both runs
};

struct ChaosReport {
  ChaosVerdict verdict;
  nlohmann::json json;   // report.json
  std::string markdown;  // report.md
};

// Runs the campaign, then the reference on its plans, judges and writes
// the report.
// Throws std::runtime_error when a run fails (naming its log file).
ChaosReport run_chaos(const ChaosOptions& options);

}  // namespace asteroid::apps
