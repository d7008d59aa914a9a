// What a node process knows about itself and shares with the stage actors
// it hosts: its id, its memory budget (the node refuses stage assignments
// that would exceed it) and its in-process CPU throttle, if any. Thread-safe.
#pragma once

#include <caf/actor_addr.hpp>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace asteroid::actors {

struct NodeContext {
  std::string node_id = "node";
  uint64_t memory_budget_bytes = 0;  // 0: no budget
  double cpu_share = 0;              // in-process throttle; 0: none

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
