// The coordinator's book of rounds: which rounds run and what their members
// reported, which rounds every member stepped, which replica every holder
// stored, and which rounds are committed. It decides and never sends: the
// coordinator asks it what to start, what to commit and which replica to
// ask for, and sends the messages (docs/runtime.md, "Rounds and commits").
//
// The commit rule: a stepped round commits once every stage that has a
// replica holder stored a replica of it or of a later round (with no
// holders, at once); rounds commit in order, and one commit names the
// newest of them. Replicas: one on its way at a time, of the newest
// stepped round, once that is `replicate_every` rounds past the last one
// stored and the pacing allows (the previous replica's time d makes the
// next wait d (1 - share) / share), or at once when a commit point waits
// (`commit_every`) or the caller says `now`.
//
// Pure: no actors and no clock of its own; times come in as arguments.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

namespace asteroid::actors {

struct RoundReport {
  uint64_t round = 0;
  double loss = 0;       // mean loss over the mini-batch
  uint32_t samples = 0;  // samples whose loss was seen
  uint32_t correct = 0;
  double ms = 0;         // from its start to the moment every member was done
};

class RoundLedger {
 public:
  using Clock = std::chrono::steady_clock;

  struct Rules {  // in this order (the coordinator initialises it as an aggregate)
    uint64_t rounds_ahead = 1;       // rounds started beyond the next to finish
    uint64_t end_round = std::numeric_limits<uint64_t>::max();  // none starts from here on
    uint64_t replicate_every = 1;
    uint64_t commit_every = 0;       // rounds r with (r + 1) % commit_every == 0 commit at once
    uint64_t max_uncommitted_rounds = 256;
    double replica_link_share = 0.05;
  };

  // What the coordinator must send after advance(): a commit of this round
  // (and every stepped round before it), a replication request of that one.
  struct Actions {
    std::optional<uint64_t> commit;
    std::optional<uint64_t> replicate;
  };

  explicit RoundLedger(Rules rules) : rules_(rules) {}

  // Forgets every round not committed: the last committed round is
  // `committed` (none: nullopt), the next to start and to finish the one
  // after it, and no replica is on its way (what is committed is covered).
  void restart_after(std::optional<uint64_t> committed);

  // The rounds to start now: up to the next to finish + rounds_ahead, none
  // from end_round on. Each is in flight from `now`.
  std::vector<uint64_t> start_due(Clock::time_point now);
  bool in_flight(uint64_t round) const { return in_flight_.count(round) > 0; }

  // A member's done report of a round in flight (others, and a second
  // report of the same member, are ignored).
  void member_done(uint64_t round, uint32_t stage, uint32_t member, double loss_sum, uint32_t samples,
                   uint32_t correct);
  // How many members reported the next round to finish done, and which
  // (stage, member).
  size_t done_count() const;
  std::set<std::pair<uint32_t, uint32_t>> done_members() const;
  // The next round to finish, now done by every member, becomes stepped;
  // its report (loss over `batch` samples; time from the end of the round
  // before it, or its own start if later, to `now`).
  RoundReport finish(Clock::time_point now, double batch);

  // Commits what the replicas cover and asks for the next replica (see the
  // contract above). `holders`: the stages that replicate to a holder.
  Actions advance(const std::set<uint32_t>& holders, bool now, Clock::time_point time);
  // A holder stored the replica of `stage` at `round`; true when that
  // completes the replica asked for (then advance() may commit).
  bool replica_stored(uint32_t stage, uint64_t round, Clock::time_point now);

  // The reports committed since the last call, in round order.
  std::vector<RoundReport> take_committed() { return std::exchange(newly_committed_, {}); }
  // The newest committed round's report (none before the first commit,
  // nor after a restart).
  const std::optional<RoundReport>& last_committed_report() const { return last_committed_report_; }

  uint64_t next_round() const { return round_; }
  std::optional<uint64_t> committed() const { return committed_; }
  bool nothing_stepped() const { return stepped_.empty(); }
  uint64_t oldest_stepped() const { return stepped_.begin()->first; }  // REQUIRES: !nothing_stepped()
  uint64_t newest_stepped() const { return stepped_.rbegin()->first; }  // REQUIRES: !nothing_stepped()
  std::optional<uint64_t> replica_asked() const { return replica_asked_; }
  // So many stepped rounds wait for replicas that no round may start.
  bool lagging() const { return stepped_.size() >= lag_limit(); }
  double longest_round_ms() const { return longest_round_ms_; }
  // How long a round may run before it counts as stalled: 10 times the
  // longest round so far, at least 20 s; before any round finished, 100
  // times the plan's predicted round, at least 60 s (the first round also
  // builds the stages' models and loads their data); never more than
  // `timeout`, which is the limit when nothing is known (no prediction).
  std::chrono::milliseconds stall_limit(double predicted_round_ms, std::chrono::milliseconds timeout) const;

 private:
  struct Progress {
    Clock::time_point started;
    std::set<std::pair<uint32_t, uint32_t>> done;
    double loss_sum = 0;
    uint32_t samples = 0, correct = 0;
  };
  bool commit_point_waits() const;
  size_t lag_limit() const;

  Rules rules_;
  uint64_t round_ = 0;       // the next round to finish
  uint64_t next_start_ = 0;  // the next round to start
  std::optional<uint64_t> committed_;
  std::map<uint64_t, Progress> in_flight_;   // started, not every member done
  std::map<uint64_t, RoundReport> stepped_;  // every member stepped, not committed
  std::optional<Clock::time_point> last_done_;
  // The replica asked for, the stages whose holders have not stored it, and
  // the newest round every holder stored.
  std::optional<uint64_t> replica_asked_;
  std::set<uint32_t> replica_waiting_;
  std::optional<uint64_t> replica_round_;
  Clock::time_point replica_asked_at_{};
  Clock::time_point next_replica_at_{};
  std::vector<RoundReport> newly_committed_;
  std::optional<RoundReport> last_committed_report_;
  double longest_round_ms_ = 0;
};

}  // namespace asteroid::actors
