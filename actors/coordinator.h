// The coordinator of one training job: connects to the nodes a plan uses
// (each within a bounded time), remote-spawns one stage actor per group
// member, deploys their assignments, then drives rounds: start, wait for
// every member's done, commit. It never waits on a remote actor without a
// deadline (CAF_NOTES.md section 4).
//
// Not thread-safe; drive it from one thread. Its destructor stops the stage
// actors it spawned (the nodes keep running).
#pragma once

#include <caf/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "messages/envelope.h"
#include "planner/types.h"

namespace asteroid::actors {

// A job cannot go on: a device is unreachable or gone, a stage failed or
// refused its assignment. The message names the device and what happened.
struct JobError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct JobSpec {
  planner::Cluster cluster;
  planner::Plan plan;
  std::string model;
  uint64_t seed = 7;       // model initialisation
  uint64_t data_seed = 7;  // sample order
  messages::OptimizerSpec optimizer;
  bool trace = false;
  std::string job_id = "job";
  // Per device id: the planner's memory estimate for its stage (optional).
  std::map<std::string, uint64_t> required_memory_bytes;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds deploy_timeout{60000};
  std::chrono::milliseconds round_timeout{600000};
};

struct RoundReport {
  uint64_t round = 0;
  double loss = 0;       // mean loss over the mini-batch
  uint32_t samples = 0;  // samples whose loss was seen
  uint32_t correct = 0;
  double ms = 0;         // start to commit
};

class Coordinator {
 public:
  Coordinator(caf::actor_system& system, JobSpec spec);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Connects to every device of the plan and deploys the stages, starting
  // at round `first_round` from the given states (one per stage, in stage
  // order) or from the seed when `states` is empty. Throws JobError.
  void deploy(uint64_t first_round = 0, const std::vector<messages::StageState>& states = {});

  // Runs and commits one round. Throws JobError.
  RoundReport run_round();

  // The last committed state of every stage (from its first member), in
  // stage order. Throws JobError.
  std::vector<messages::StageState> fetch_states();
  // The same from every member of every group, stage by stage, member by
  // member (members of a group must hold identical states).
  std::vector<messages::StageState> fetch_member_states();

  // Trace events received so far (when spec.trace), and the peak resident
  // memory reported by each device.
  const std::vector<messages::TraceEvent>& trace() const;
  const std::map<std::string, uint64_t>& peak_memory_bytes() const;

  uint64_t next_round() const;
  const JobSpec& spec() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace asteroid::actors
