// What a node process knows about itself and shares with the stage actors
// it hosts: its id, its memory budget (the node refuses stage assignments
// that would exceed it) and its in-process CPU throttle, if any. Thread-safe.
#pragma once

#include <caf/actor_addr.hpp>

#include "actors/kept_states.h"
#include "actors/peer_watch.h"
#include "compute/cpu_throttle.h"
#include "compute/dataset.h"
#include "messages/envelope.h"

#include <atomic>
#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace asteroid::actors {

class TlsTransport;

struct NodeContext {
  // cpu_share > 0 throttles in-process (also $ASTEROID_CPU_SHARE and the
  // slow-down control file, see compute/cpu_throttle.h).
  explicit NodeContext(std::string id = "node", uint64_t memory_budget = 0, double cpu_share = 0);

  std::string node_id = "node";
  uint64_t memory_budget_bytes = 0;  // 0: no budget
  double cpu_share = 0;              // in-process throttle; 0: none
  // Torch intra-op threads of every thread that computes here. OpenMP keeps
  // this per thread: a thread that never sets it runs oneDNN on as many
  // threads as the machine has cores, which under a small CPU quota spin
  // on each other's barriers.
  int torch_threads = 1;
  // The training data of `model`, opened once per node and shared by the
  // stage actors that read it (a stage re-deployed or respawned here after
  // a failure does not read the files again). Throws what opening threw.
  std::shared_ptr<const compute::Dataset> training_data(const std::string& model);
  // Starts opening it in the background, if not yet done: a member of a
  // later stage may become a first stage in a re-plan, which then need not
  // wait for the files.
  void prefetch_training_data(const std::string& model);

  // Fault injection for experiments and tests (`asteroid node --crash-at
  // EVENT:ROUND`): the node SIGKILLs itself when one of its stages reaches
  // EVENT (forward, backward, allreduce, replicate, step) in round ROUND
  // (`or_later`: in ROUND or a later one; replication skips rounds, so
  // `replicate` crashes at the first replica of ROUND or after it), when a
  // stage here is first assigned to start at ROUND or later (`assign`: with
  // ROUND > 0, a re-deployment during a recovery), or when a stage here is
  // first asked for its state of ROUND or later (`state`: a checkpoint, the
  // end of the job, an abort's confirmation or a recovery).
  // `peers`: when the node is asked to connect to its plan's peers for the
  // ROUND-th time (0: the first deployment). `--freeze-at` SIGSTOPs instead;
  // `--hang-at` blocks the calling thread for good: the stage is stuck while
  // the node answers heartbeats. `--anonymous-at gradient:ROUND`: the first
  // gradient of ROUND a stage here sends goes without a sender (what a
  // receiver sees when its node has no route to this one), once.
  // `--fail-at`: the stage reaching EVENT:ROUND throws, once (a stage that
  // fails on its own while its node lives on).
  enum class FaultAction { kill, freeze, hang, anonymous, fail };
  std::string crash_event;
  int64_t crash_round = -1;
  FaultAction fault_action = FaultAction::kill;
  uint64_t peers_asked = 0;
  std::atomic<bool> anonymous_sent{false};
  mutable std::atomic<bool> failure_thrown{false};
  void crash_point(const char* event, uint64_t round, bool or_later = false) const;
  bool sends_anonymously(const char* event, uint64_t round);

  // Wraps every compute call of the stages hosted here (a no-op unless the
  // node runs with --cpu-share, the fallback when cgroups are not available).
  compute::CpuThrottle throttle;

  // Reserves `bytes` of the budget for a stage. False, with the reason in
  // `why`, when they do not fit beside what is already reserved.
  bool reserve(uint64_t bytes, std::string* why);
  void release(uint64_t bytes);
  uint64_t reserved() const;

  // The device supervisor (the node actor, actors/node.h); unset in
  // processes that host stages without a node (tests). Set before any
  // stage actor runs. supervise() puts a stage actor, as its coordinator
  // assigned it, under its watch.
  caf::actor_addr supervisor;
  void supervise(const caf::actor& stage, const caf::actor& coordinator, uint32_t stage_index,
                 uint32_t member) const;

  // Stage actors hosted here, so that shutdown can stop them (an actor
  // system does not shut down while any of its actors lives).
  void add_stage(caf::actor_addr stage);
  void remove_stage(const caf::actor_addr& stage);
  void stop_stages();

  // What the node keeps of jobs' states (kept_states.h): the last
  // committed state of each stage hosted here (blobs shared with the
  // stage, not copied), so that a stage actor that failed can be restarted
  // from it, and the replicas of other devices' stages.
  void keep_committed(const messages::StageState& state);
  void store_replica(messages::StageState state);
  std::optional<messages::StageState> kept(const std::string& job, uint32_t begin, uint32_t end,
                                           uint64_t round) const;
  std::vector<messages::KeptEntry> kept_list(const std::string& job) const;
  // Drops what a job no longer needs (messages::Release); returns how many states went.
  size_t release(const messages::Release& release);

  // The node's watch over its pipeline peers (null in processes that host
  // stages without a node, e.g. tests); the Peers message sets its peers.
  std::shared_ptr<PeerWatch> peer_watch;

  // Who this node is and what it keeps now (the answer to hello).
  messages::NodeInfo info() const;

  // Control (docs/security.md): with TLS the token a coordinator shows,
  // given to it by the node's gateway (actors/tls.h); empty: no check.
  std::string control_token;
  std::shared_ptr<TlsTransport> tls;  // null: plain TCP
  // Whether `authorization` (an envelope's or a spawn's) is the control
  // token; false counts and logs the refusal of `what`.
  bool authorized(const std::string& authorization, const std::string& what);
  // Counts and logs a refused control message or spawn.
  void refuse(const std::string& what);
  uint64_t refused_control() const { return refused_control_; }
  // Set by the node's own shutdown: the node actor then takes its exit.
  std::atomic<bool> stopping{false};

 private:
  mutable std::mutex mutex_;
  uint64_t reserved_bytes_ = 0;
  std::vector<caf::actor_addr> stages_;
  KeptStates kept_;
  std::atomic<uint64_t> refused_control_{0};
  using DataFuture = std::shared_future<std::shared_ptr<const compute::Dataset>>;
  DataFuture open_data(const std::string& model);
  std::mutex data_mutex_;  // guards data_, apart from the rest
  std::map<std::string, DataFuture> data_;  // by data set; each opened on a thread of its own
};

}  // namespace asteroid::actors
