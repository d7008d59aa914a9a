// What a node process knows about itself and shares with the stage actors
// it hosts: its id, its memory budget (the node refuses stage assignments
// that would exceed it) and its in-process CPU throttle, if any. Thread-safe.
#pragma once

#include <caf/actor_addr.hpp>

#include "compute/cpu_throttle.h"

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace asteroid::actors {

struct NodeContext {
  // cpu_share > 0 throttles in-process (also $ASTEROID_CPU_SHARE and the
  // slow-down control file, see compute/cpu_throttle.h).
  explicit NodeContext(std::string id = "node", uint64_t memory_budget = 0, double cpu_share = 0);

  std::string node_id = "node";
  uint64_t memory_budget_bytes = 0;  // 0: no budget
  double cpu_share = 0;              // in-process throttle; 0: none
  // Wraps every compute call of the stages hosted here (a no-op unless the
  // node runs with --cpu-share, the fallback when cgroups are not available).
  compute::CpuThrottle throttle;

  // Reserves `bytes` of the budget for a stage. False, with the reason in
  // `why`, when they do not fit beside what is already reserved.
  bool reserve(uint64_t bytes, std::string* why);
  void release(uint64_t bytes);
  uint64_t reserved() const;

  // Stage actors hosted here, so that shutdown can stop them (an actor
  // system does not shut down while any of its actors lives).
  void add_stage(caf::actor_addr stage);
  void remove_stage(const caf::actor_addr& stage);
  void stop_stages();

 private:
  mutable std::mutex mutex_;
  uint64_t reserved_bytes_ = 0;
  std::vector<caf::actor_addr> stages_;
};

}  // namespace asteroid::actors
