// Which device a cut link between two live devices costs.
#include <gtest/gtest.h>

#include "actors/partitions.h"

namespace asteroid::actors {
namespace {

const std::set<std::string> kAlive = {"d0", "d1", "d2", "d3", "d4"};
const std::vector<std::string> kPlan = {"d0", "d1", "d2", "d3"};  // d4 idle
const PartitionJudge::Time t0{};
const std::chrono::milliseconds kSettle{6000};

TEST(PartitionJudge, ACutBetweenNeighboursCostsTheLaterOneUntilItHealsAndSettles) {
  PartitionJudge judge(kSettle);
  judge.report("d2", {"d3"});
  judge.report("d3", {"d2"});
  auto changes = judge.judge(kAlive, kPlan, t0);
  EXPECT_EQ(changes.partitioned, std::vector<std::string>{"d3"});
  EXPECT_TRUE(changes.healed.empty());
  // The re-plan leaves d3 out: d2 stops watching it, d3 still cannot reach
  // d2 (its old peer): still partitioned, nothing new.
  const std::vector<std::string> without_d3 = {"d0", "d1", "d2", "d4"};
  judge.report("d2", {});
  changes = judge.judge(kAlive, without_d3, t0 + kSettle * 2);
  EXPECT_TRUE(changes.partitioned.empty());
  EXPECT_TRUE(changes.healed.empty());
  EXPECT_EQ(judge.partitioned(), std::set<std::string>{"d3"});
  // The link heals: back once no cut touched d3 for the settle time.
  judge.report("d3", {});
  EXPECT_TRUE(judge.judge(kAlive, without_d3, t0 + kSettle * 3).healed.empty());
  EXPECT_TRUE(judge.judge(kAlive, without_d3, t0 + kSettle * 4 - std::chrono::milliseconds(1)).healed.empty());
  changes = judge.judge(kAlive, without_d3, t0 + kSettle * 4);
  EXPECT_EQ(changes.healed, std::vector<std::string>{"d3"});
  EXPECT_TRUE(judge.partitioned().empty());
}

TEST(PartitionJudge, TheOtherEndReportingLateDoesNotHealTheNamedOneNorNameItsPeer) {
  // d2 notices the cut first: d3 is named. The re-plan gives d2 peers
  // without d3, so its report clears before d3 has reported d2.
  PartitionJudge judge(kSettle);
  judge.report("d2", {"d3"});
  EXPECT_EQ(judge.judge(kAlive, kPlan, t0).partitioned, std::vector<std::string>{"d3"});
  judge.report("d2", {});
  const std::vector<std::string> without_d3 = {"d0", "d1", "d2", "d4"};
  EXPECT_TRUE(judge.judge(kAlive, without_d3, t0 + std::chrono::milliseconds(100)).healed.empty());
  judge.report("d3", {"d2"});  // its deadline passed later
  const auto changes = judge.judge(kAlive, without_d3, t0 + std::chrono::milliseconds(3000));
  EXPECT_TRUE(changes.partitioned.empty()) << "d2 must not pay for d3's late report";
  EXPECT_TRUE(changes.healed.empty());
  EXPECT_EQ(judge.partitioned(), std::set<std::string>{"d3"});
}

TEST(PartitionJudge, TheDeviceOnMostCutLinksGoesNotEachOfItsPeers) {
  // d1 is cut off from two peers; they report it.
  PartitionJudge judge;
  judge.report("d0", {"d1"});
  judge.report("d2", {"d1"});
  EXPECT_EQ(judge.judge(kAlive, kPlan, t0).partitioned, std::vector<std::string>{"d1"});
  // d3's view is wrong (it reports every peer, nobody reports it): it goes,
  // not its three peers.
  PartitionJudge wrong;
  wrong.report("d3", {"d0", "d1", "d2"});
  EXPECT_EQ(wrong.judge(kAlive, kPlan, t0).partitioned, std::vector<std::string>{"d3"});
}

TEST(PartitionJudge, ANamedDeviceTheMonitorLostForAWhileKeepsItsCut) {
  // d3 is named; then the monitor misses it for a while (busy); when it
  // answers again its stale report of d2 must not get d2 named.
  PartitionJudge judge;
  judge.report("d2", {"d3"});
  judge.report("d3", {"d2"});
  EXPECT_EQ(judge.judge(kAlive, kPlan, t0).partitioned, std::vector<std::string>{"d3"});
  judge.report("d2", {});  // the re-plan left d3 out
  auto changes = judge.judge({"d0", "d1", "d2", "d4"}, {"d0", "d1", "d2", "d4"}, t0 + kSettle * 2);
  EXPECT_TRUE(changes.partitioned.empty());
  EXPECT_TRUE(changes.healed.empty());
  changes = judge.judge(kAlive, {"d0", "d1", "d2", "d4"}, t0 + kSettle * 3);
  EXPECT_TRUE(changes.partitioned.empty());
  EXPECT_EQ(judge.partitioned(), std::set<std::string>{"d3"});
}

TEST(PartitionJudge, DevicesTheMonitorLostAreNotJudged) {
  // d3 died: d2 cannot reach it, but its loss is the monitor's to report;
  // d2 is not blamed for it.
  PartitionJudge judge;
  judge.report("d2", {"d3"});
  EXPECT_TRUE(judge.judge({"d0", "d1", "d2"}, kPlan, t0).partitioned.empty());
}

TEST(PartitionJudge, ADeviceOutsideThePlanGoesFirstAndEachCutCostsOneDevice) {
  PartitionJudge judge;
  judge.report("d4", {"d0"});
  judge.report("d0", {"d4"});
  judge.report("d1", {"d2"});
  judge.report("d2", {"d1"});
  const auto changes = judge.judge(kAlive, kPlan, t0);
  EXPECT_EQ(changes.partitioned, (std::vector<std::string>{"d4", "d2"}));
}

}  // namespace
}  // namespace asteroid::actors
