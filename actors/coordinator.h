// The coordinator of one training job: connects to the nodes a plan uses
// (each within a bounded time), remote-spawns one stage actor per group
// member, deploys their assignments, then drives rounds: start, wait for
// every member's done, commit. Rounds overlap: round r + 1 is started
// before r is done (`rounds_ahead`), so a first-stage member goes on as soon
// as its own update of r is applied instead of idling until every member
// reported and the coordinator answered. It never waits on a remote actor
// without a deadline (CAF_NOTES.md section 4).
//
// Commit rule (kept by RoundLedger, round_ledger.h, which decides what
// this class sends): a round counts once every member has stepped it and every
// single-device stage's replica of it, or of a later round, is stored on its
// holder. Replication runs beside the rounds, one replica at a time, paced
// to a share of the time (`replica_link_share`): the coordinator asks every
// member to keep its state of the newest round all members stepped, and
// every single-device stage to ship it to its holder (so the holders store
// the same rounds and every commit is a point all stages can return to).
// Rounds commit in batches as replicas land; the rounds keep going unless
// more than `max_uncommitted_rounds` wait, which bounds the replay after a
// failure (a member keeps the committed state, the replica's, and its two
// newest stepped states, however many rounds wait).
//
// It also offers what supervision needs: abort the rounds in flight, find
// every stage's last committed state (live member, replica or central copy)
// and switch to another plan. Not thread-safe; drive it from one thread (or
// one fiber: its waits go through a Mailbox, actors/mailbox.h). Its
// destructor stops the stage actors it spawned (the nodes keep running).
#pragma once

#include <caf/fwd.hpp>

#include <chrono>
#include <functional>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "actors/round_ledger.h"
#include "messages/envelope.h"
#include "planner/types.h"

namespace asteroid::actors {

class Mailbox;

// A job cannot go on: a device is unreachable or gone, a stage failed or
// refused its assignment. The message names the device and what happened.
struct JobError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A device stopped answering during a round: its stage actors went down, or
// the heartbeat monitor declared it dead.
struct DeviceLost : JobError {
  DeviceLost(std::string device_id, const std::string& what) : JobError(what), device(std::move(device_id)) {}
  std::string device;
};

// A stage actor failed on its own (an exception in its compute, or it died
// while its node lives): the node can host it again.
struct StageFailed : JobError {
  StageFailed(std::string device_id, uint32_t stage_index, const std::string& what)
      : JobError(what), device(std::move(device_id)), stage(stage_index) {}
  std::string device;
  uint32_t stage;
};

// A round made no progress for much longer than rounds take (a message
// lost in transit, a member stuck): it can be replayed.
struct RoundStalled : JobError {
  using JobError::JobError;
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
  uint32_t replicate_every = 1;  // single-device stages replicate at most every N rounds (0: never)
  uint32_t central_every = 0;    // every stage sends its state to the coordinator every N rounds
  // Rounds started before the round in flight is done: 1, or 0 for a
  // barrier after every round (a member keeps its two newest stepped states,
  // enough for one round ahead); and the first round never started (the
  // job's end).
  uint32_t rounds_ahead = 1;
  // Replication may take at most this share of the time: after a replica
  // that took d from the ask to the last holder's confirmation, the next is
  // asked d (1 - share) / share later (and `replicate_every` rounds later).
  double replica_link_share = 0.05;
  // Rounds r with (r + 1) % commit_every == 0 commit as soon as they are
  // stepped, their replicas asked for at once whatever the pacing (a
  // checkpoint is due after them); 0: none.
  uint32_t commit_every = 0;
  // Stepped rounds that may wait for replicas before no round starts: the
  // most rounds a recovery replays.
  uint32_t max_uncommitted_rounds = 256;
  uint64_t end_round = std::numeric_limits<uint64_t>::max();
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds deploy_timeout{60000};
  // The longest a round may take before it counts as stalled
  // (RoundLedger::stall_limit: the first round 100 times the plan's
  // predicted round, at least 60 s; later ones 10 times the longest round
  // so far, at least 20 s; never more than this).
  std::chrono::milliseconds round_timeout{600000};
};

class Coordinator {
 public:
  // The coordinator's messages arrive in `mailbox` (a job's driver's: an
  // event-based actor's, so that waiting for a round holds no thread;
  // supervision/job_actor.h) or, without one, in a scoped actor's that the
  // calling thread waits in (tools, tests).
  Coordinator(caf::actor_system& system, JobSpec spec, Mailbox* mailbox = nullptr);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Connects to every device of the plan and deploys the stages, starting
  // at round `first_round` from the given states (one per stage, in stage
  // order) or from the seed when `states` is empty. Throws JobError.
  void deploy(uint64_t first_round = 0, const std::vector<messages::StageState>& states = {});

  // Runs round next_round(). Returns the rounds committed meanwhile, in
  // order (none, this one, or several at once). Throws DeviceLost or
  // JobError; the rounds committed before the throw are then returned by
  // take_committed().
  std::vector<RoundReport> run_round();
  // Commits the rounds still waiting for replicas (asks for a replica of the
  // newest one at once).
  std::vector<RoundReport> flush();
  // Rounds committed and not yet returned (after a throw).
  std::vector<RoundReport> take_committed();
  // Called for every round as it commits, in order, before any member is
  // told: a member never keeps a committed state of a round the listener
  // (the job's metrics log) has not seen. It may throw (e.g. a diverged
  // loss): the throw leaves run_round or flush.
  void on_commit(std::function<void(const RoundReport&)> listener);

  uint64_t next_round() const;
  // The last committed round, if any round was committed.
  std::optional<uint64_t> last_committed() const;

  // The last committed state of every stage (from its first member), in
  // stage order. Throws DeviceLost naming a member that did not answer.
  std::vector<messages::StageState> fetch_states();
  // The same from every member of every group, stage by stage, member by
  // member (members of a group must hold identical states).
  std::vector<messages::StageState> fetch_member_states();

  // ---- supervision ----

  // Tells every member not on a lost device to drop the rounds not
  // committed and roll back to the last committed state.
  void abort(const std::set<std::string>& lost_devices);
  // Layers [begin, end) at the last committed round, for every stage of the
  // running plan: from a live member, else from the replica holder, else
  // from the central copy of that round. nullopt for a stage whose state is
  // lost with the devices in `lost_devices`.
  std::vector<std::optional<messages::StageState>> recover_states(const std::set<std::string>& lost_devices);
  // Switches to `plan` from the round after the last committed one. A member
  // whose device and layers stay the same is re-deployed in place and keeps
  // its weights; every other member is spawned (on a device not in
  // `lost_devices`) and loads `states[stage]`. Members no longer in the
  // plan are stopped. Throws JobError; then no stage actor of either plan
  // is left running (deployed() is false).
  // With `respawn`, every member is spawned anew (none stays in place).
  // Deploying with states also gives each replica holder of the new plan
  // its stage's state at once (a stage lost before the plan's first replica
  // lands is recovered from it; the chaos campaign lost one that way).
  void redeploy(const planner::Plan& plan, const std::vector<messages::StageState>& states,
                const std::set<std::string>& lost_devices, bool respawn = false);
  // After an abort, puts in place of each stage actor of `failed_devices`
  // that failed on its own what its node (the device supervisor,
  // actors/node.h) restarted on the device; it loads its stage's committed
  // state: a stage with no other live member from the copy its node keeps
  // (nothing travels), else from another member of its group (or the
  // replica, the central copy); every other member keeps its actor and its
  // rolled-back state. Returns the states sent, by stage (empty for the
  // stages that stayed or loaded their node's copy, and for all before the
  // first commit: the restarted ones start from the seed). Throws
  // DeviceLost when a node gave up restarting (or said nothing within the
  // connection deadline), JobError when the redeploy fails (then, as after
  // a failed redeploy, no stage actor is left running).
  std::vector<messages::StageState> restart_in_place(const std::set<std::string>& failed_devices,
                                                     const std::set<std::string>& lost_devices);
  // Rolls the job back to committed round `round` (older than the last
  // committed one, e.g. a checkpoint's; nullopt: before round 0) so that
  // redeploy continues from there.
  void rewind_to(std::optional<uint64_t> round);

  const planner::Plan& plan() const;
  // The node actor of every device the coordinator connected to.
  std::map<std::string, caf::actor> node_actors() const;
  // Connects (again) to a device, within `within` (default: the connect
  // timeout). Throws JobError.
  void reconnect(const std::string& device, std::optional<std::chrono::milliseconds> within = {});
  // Asks a connected device's node for a short profile, without waiting
  // (adaptive training measures idle devices so; nothing happens for a
  // device not connected, reported lost or still being probed: false); the
  // answer comes with take_probes(), a failure is logged.
  bool probe_speed(const std::string& device, const messages::ProfileRequest& request);
  // The probes answered since the last call, by device; handles what
  // waits in the mailbox first.
  std::map<std::string, planner::Profile> take_probes();
  // The devices the heartbeat monitor (or a lost connection) reports lost
  // now, after waiting at most `wait` for news of one not in `known`.
  std::set<std::string> reported_lost(const std::set<std::string>& known, std::chrono::milliseconds wait);
  // False after a redeploy failed (no stage actor runs until the next one).
  bool deployed() const;
  // Devices reported back (back_atom) since the last call; handles what
  // waits in the mailbox first.
  std::set<std::string> take_returned();
  // The actor that receives the coordinator's messages: others (the
  // heartbeat monitor) report lost devices to it as (lost_atom, device id),
  // and anyone may ask it (status_atom) for status() while rounds run.
  caf::actor inbox() const;
  // Where its messages arrive: a request made through it (actors/ask.h)
  // waits as the coordinator does (suspending a job driver's body).
  Mailbox& mailbox() const;
  // {"next_round", "last_committed" (null before the first commit),
  //  "last_loss" (of that round, or null), "plan", "devices": {id:
  //  "in use" | "idle" | "lost"}}: "lost" as the heartbeat monitor last
  // reported, until it reports the device back.
  std::string status() const;

  // Trace events received so far (when spec.trace), and the peak resident
  // memory reported by each device.
  const std::vector<messages::TraceEvent>& trace() const;
  const std::map<std::string, uint64_t>& peak_memory_bytes() const;
  // The compute time (forwards and backwards) each device reported for
  // `round`, in ms, summed over its members; the reports of that round and
  // of older ones are forgotten. Members report with `done`, so a
  // committed round's are all here.
  std::map<std::string, double> take_compute_ms(uint64_t round);
  // How many times stages were deployed (deploy, redeploy): a new value
  // means a new plan or fresh members.
  uint64_t deployments() const;
  const JobSpec& spec() const;
  // Messages dropped so far: malformed, from an actor that is not a member
  // of the running deployment (a stage of an earlier plan, anyone else), or
  // claiming another member's stage; each also logged with its sender.
  uint64_t dropped_messages() const;

  // ---- what nodes keep (actors/kept_states.h) ----

  // The job finished: every node it connected to drops all it keeps of the
  // job (replicas, committed states). Returns, by device, the bytes each
  // node still keeps for any job afterwards; a node that does not answer
  // within the connect timeout is logged and left out. Not called for a job
  // that failed: its states are what a resume may need. The states of a
  // superseded plan go on their own, at the new plan's first commit.
  std::map<std::string, uint64_t> release_job();
  // The bytes each node last said it keeps (after a release).
  const std::map<std::string, uint64_t>& kept_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace asteroid::actors
