// The coordinator's book of rounds without actors: which rounds start,
// when a round is stepped, the commit rule, replica requests and pacing.
#include <gtest/gtest.h>

#include "actors/round_ledger.h"

namespace asteroid::actors {
namespace {

using Clock = RoundLedger::Clock;
using std::chrono::milliseconds;

const Clock::time_point t0{};

// Every member of a `members`-member plan reports `round` done with loss 1
// per sample over `per_member` samples.
void all_done(RoundLedger& ledger, uint64_t round, uint32_t members, uint32_t per_member = 4) {
  for (uint32_t m = 0; m < members; ++m) ledger.member_done(round, m, 0, per_member, per_member, per_member / 2);
}

// Starts what is due, then `round` is done by every member and stepped.
void step(RoundLedger& ledger, uint64_t round, uint32_t members) {
  ledger.start_due(t0);
  all_done(ledger, round, members);
  ledger.finish(t0, 4);
}

TEST(RoundLedger, StartsOneRoundAheadAndNoneFromTheEnd) {
  RoundLedger::Rules rules;
  rules.end_round = 3;
  RoundLedger ledger(rules);
  ledger.restart_after(std::nullopt);
  EXPECT_EQ(ledger.start_due(t0), (std::vector<uint64_t>{0, 1}));
  EXPECT_TRUE(ledger.start_due(t0).empty()) << "already started";
  all_done(ledger, 0, 2);
  ledger.finish(t0 + milliseconds(10), 8);
  EXPECT_EQ(ledger.start_due(t0), (std::vector<uint64_t>{2}));
  all_done(ledger, 1, 2);
  ledger.finish(t0 + milliseconds(20), 8);
  EXPECT_TRUE(ledger.start_due(t0).empty()) << "round 3 is the end";
  EXPECT_FALSE(ledger.in_flight(3));

  RoundLedger barrier([] {
    RoundLedger::Rules r;
    r.rounds_ahead = 0;
    return r;
  }());
  barrier.restart_after(4);  // resumes after round 4
  EXPECT_EQ(barrier.start_due(t0), (std::vector<uint64_t>{5}));
}

TEST(RoundLedger, ARoundIsSteppedWhenEveryMemberReportedItOnce) {
  RoundLedger ledger(RoundLedger::Rules{});
  ledger.restart_after(std::nullopt);
  ledger.start_due(t0);
  ledger.member_done(0, 0, 0, 6, 4, 1);
  ledger.member_done(0, 0, 0, 6, 4, 1);  // again: ignored
  ledger.member_done(7, 1, 0, 6, 4, 1);  // not in flight: ignored
  EXPECT_EQ(ledger.done_count(), 1u);
  ledger.member_done(0, 1, 0, 2, 4, 3);
  EXPECT_EQ(ledger.done_count(), 2u);
  const RoundReport r = ledger.finish(t0 + milliseconds(30), 8);
  EXPECT_EQ(r.round, 0u);
  EXPECT_DOUBLE_EQ(r.loss, (6.0 + 2.0) / 8);
  EXPECT_EQ(r.samples, 8u);
  EXPECT_EQ(r.correct, 4u);
  EXPECT_DOUBLE_EQ(r.ms, 30);
  EXPECT_EQ(ledger.next_round(), 1u);
  // Round 1 started at t0 too: its time runs from round 0's end.
  all_done(ledger, 1, 2);
  EXPECT_DOUBLE_EQ(ledger.finish(t0 + milliseconds(50), 8).ms, 20);
  EXPECT_DOUBLE_EQ(ledger.longest_round_ms(), 30);
  EXPECT_THROW(ledger.finish(t0, 8), std::logic_error) << "round 2 was never started";
}

TEST(RoundLedger, WithoutHoldersASteppedRoundCommitsAtOnce) {
  RoundLedger ledger(RoundLedger::Rules{});
  ledger.restart_after(std::nullopt);
  step(ledger, 0, 1);
  const auto actions = ledger.advance({}, false, t0);
  EXPECT_EQ(actions.commit, std::optional<uint64_t>(0));
  EXPECT_FALSE(actions.replicate);
  EXPECT_EQ(ledger.committed(), std::optional<uint64_t>(0));
  const auto reports = ledger.take_committed();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].round, 0u);
  EXPECT_TRUE(ledger.take_committed().empty());
}

TEST(RoundLedger, RoundsCommitOnceEveryHolderStoredAReplicaOfThemOrLater) {
  RoundLedger::Rules rules;
  rules.replica_link_share = 0.5;  // the next replica waits as long as the last took
  RoundLedger ledger(rules);
  ledger.restart_after(std::nullopt);
  const std::set<uint32_t> holders{0, 2};
  step(ledger, 0, 3);
  auto actions = ledger.advance(holders, false, t0);
  EXPECT_FALSE(actions.commit);
  EXPECT_EQ(actions.replicate, std::optional<uint64_t>(0));
  EXPECT_EQ(ledger.replica_asked(), std::optional<uint64_t>(0));
  // Rounds 1 and 2 step while replica 0 travels: no second request.
  for (uint64_t r = 1; r <= 2; ++r) {
    step(ledger, r, 3);
    actions = ledger.advance(holders, false, t0);
    EXPECT_FALSE(actions.commit);
    EXPECT_FALSE(actions.replicate);
  }
  EXPECT_FALSE(ledger.replica_stored(0, 1, t0)) << "not the round asked for";
  EXPECT_FALSE(ledger.replica_stored(0, 0, t0 + milliseconds(100))) << "stage 2 has not stored it";
  EXPECT_TRUE(ledger.replica_stored(2, 0, t0 + milliseconds(100)));
  // Round 0 commits; the next replica (of round 2, the newest) waits for
  // the pacing: it took 100 ms, so not before t0 + 200 ms.
  actions = ledger.advance(holders, false, t0 + milliseconds(150));
  EXPECT_EQ(actions.commit, std::optional<uint64_t>(0));
  EXPECT_FALSE(actions.replicate);
  actions = ledger.advance(holders, false, t0 + milliseconds(200));
  EXPECT_FALSE(actions.commit);
  EXPECT_EQ(actions.replicate, std::optional<uint64_t>(2));
  EXPECT_FALSE(ledger.replica_stored(0, 2, t0 + milliseconds(210)));
  EXPECT_TRUE(ledger.replica_stored(2, 2, t0 + milliseconds(220)));
  EXPECT_EQ(ledger.advance(holders, false, t0 + milliseconds(220)).commit, std::optional<uint64_t>(2));
}

TEST(RoundLedger, AReplicaCoversEveryRoundUpToIt) {
  RoundLedger ledger(RoundLedger::Rules{});
  ledger.restart_after(std::nullopt);
  const std::set<uint32_t> holders{1};
  for (uint64_t r = 0; r < 3; ++r) {
    step(ledger, r, 2);
  }
  EXPECT_EQ(ledger.advance(holders, true, t0).replicate, std::optional<uint64_t>(2));
  EXPECT_TRUE(ledger.replica_stored(1, 2, t0));
  const auto actions = ledger.advance(holders, false, t0);
  EXPECT_EQ(actions.commit, std::optional<uint64_t>(2)) << "one commit names the newest";
  const auto reports = ledger.take_committed();
  ASSERT_EQ(reports.size(), 3u);
  for (uint64_t r = 0; r < 3; ++r) EXPECT_EQ(reports[r].round, r);
  EXPECT_TRUE(ledger.nothing_stepped());
  ASSERT_TRUE(ledger.last_committed_report());
  EXPECT_EQ(ledger.last_committed_report()->round, 2u);
  ledger.restart_after(2);  // a re-plan after round 2: it stays the last
  ASSERT_TRUE(ledger.last_committed_report());
  ledger.restart_after(1);  // a rewind: round 2 no longer counts
  EXPECT_FALSE(ledger.last_committed_report());
}

TEST(RoundLedger, ACommitPointIsReplicatedWhateverThePacing) {
  RoundLedger::Rules rules;
  rules.replicate_every = 10;
  rules.commit_every = 2;  // rounds 1, 3, 5, ...
  RoundLedger ledger(rules);
  ledger.restart_after(std::nullopt);
  const std::set<uint32_t> holders{0};
  step(ledger, 0, 1);
  EXPECT_FALSE(ledger.advance(holders, false, t0).replicate) << "round 0 is no commit point, 10 rounds not reached";
  step(ledger, 1, 1);
  EXPECT_EQ(ledger.advance(holders, false, t0).replicate, std::optional<uint64_t>(1));
}

TEST(RoundLedger, TooManyUncommittedRoundsStopTheStarts) {
  RoundLedger::Rules rules;
  rules.max_uncommitted_rounds = 3;
  RoundLedger ledger(rules);
  ledger.restart_after(std::nullopt);
  const std::set<uint32_t> holders{0};
  for (uint64_t r = 0; r < 3; ++r) {
    EXPECT_FALSE(ledger.lagging());
    step(ledger, r, 1);
    ledger.advance(holders, false, t0);
  }
  EXPECT_TRUE(ledger.lagging());
  EXPECT_TRUE(ledger.replica_stored(0, 0, t0));
  ledger.advance(holders, false, t0);
  EXPECT_FALSE(ledger.lagging()) << "round 0 committed";
}

TEST(RoundLedger, RestartForgetsWhatIsNotCommitted) {
  RoundLedger ledger(RoundLedger::Rules{});
  ledger.restart_after(std::nullopt);
  const std::set<uint32_t> holders{0};
  for (uint64_t r = 0; r < 2; ++r) {
    step(ledger, r, 1);
  }
  ledger.advance(holders, true, t0);  // replica of round 1 asked
  ledger.restart_after(std::nullopt);
  EXPECT_TRUE(ledger.nothing_stepped());
  EXPECT_FALSE(ledger.replica_asked());
  EXPECT_FALSE(ledger.replica_stored(0, 1, t0)) << "the old request is void";
  EXPECT_EQ(ledger.next_round(), 0u);
  EXPECT_EQ(ledger.start_due(t0), (std::vector<uint64_t>{0, 1}));
  EXPECT_EQ(ledger.done_count(), 0u) << "reports before the restart do not count";
  ledger.restart_after(5);
  EXPECT_EQ(ledger.committed(), std::optional<uint64_t>(5));
  EXPECT_EQ(ledger.next_round(), 6u);
}

TEST(RoundLedger, AStalledRoundIsJudgedByThePredictionUntilARoundFinished) {
  RoundLedger ledger{RoundLedger::Rules{}};
  ledger.restart_after(std::nullopt);
  const milliseconds cap(600000);
  EXPECT_EQ(ledger.stall_limit(0, cap), cap) << "nothing known: the configured limit";
  EXPECT_EQ(ledger.stall_limit(50, cap), milliseconds(60000)) << "a short predicted round: the 60 s floor";
  EXPECT_EQ(ledger.stall_limit(2000, cap), milliseconds(200000));
  EXPECT_EQ(ledger.stall_limit(20000, cap), cap);
  ledger.start_due(t0);
  all_done(ledger, 0, 2);
  ledger.finish(t0 + milliseconds(5000), 8);
  EXPECT_EQ(ledger.stall_limit(50, cap), milliseconds(50000)) << "then 10 times the longest round measured";
  EXPECT_EQ(ledger.stall_limit(0, milliseconds(30000)), milliseconds(30000));
}

}  // namespace
}  // namespace asteroid::actors
