// Which device a cut link between two live devices costs.
#include <gtest/gtest.h>

#include "actors/partitions.h"

namespace asteroid::actors {
namespace {

const std::set<std::string> kAlive = {"d0", "d1", "d2", "d3", "d4"};
const std::vector<std::string> kPlan = {"d0", "d1", "d2", "d3"};  // d4 idle

TEST(PartitionJudge, ACutBetweenNeighboursCostsTheLaterOneUntilItHeals) {
  PartitionJudge judge;
  judge.report("d2", {"d3"});
  judge.report("d3", {"d2"});
  auto changes = judge.judge(kAlive, kPlan);
  EXPECT_EQ(changes.partitioned, std::vector<std::string>{"d3"});
  EXPECT_TRUE(changes.healed.empty());
  // The re-plan leaves d3 out: d2 stops watching it, d3 still cannot reach
  // d2 (its old peer): still partitioned, nothing new.
  judge.report("d2", {});
  changes = judge.judge(kAlive, {"d0", "d1", "d2", "d4"});
  EXPECT_TRUE(changes.partitioned.empty());
  EXPECT_TRUE(changes.healed.empty());
  EXPECT_EQ(judge.partitioned(), std::set<std::string>{"d3"});
  // The link heals.
  judge.report("d3", {});
  changes = judge.judge(kAlive, {"d0", "d1", "d2", "d4"});
  EXPECT_EQ(changes.healed, std::vector<std::string>{"d3"});
  EXPECT_TRUE(judge.partitioned().empty());
}

TEST(PartitionJudge, TheDeviceOthersCannotReachGoesNotTheOneReportingIt) {
  // d1 is isolated (it reports nothing: it hears nobody's heartbeats and
  // its own list is stale), two peers cannot reach it.
  PartitionJudge judge;
  judge.report("d0", {"d1"});
  judge.report("d2", {"d1"});
  EXPECT_EQ(judge.judge(kAlive, kPlan).partitioned, std::vector<std::string>{"d1"});
}

TEST(PartitionJudge, DevicesTheMonitorLostAreNotJudged) {
  // d3 died: d2 cannot reach it, but its loss is the monitor's to report;
  // d2 is not blamed for it.
  PartitionJudge judge;
  judge.report("d2", {"d3"});
  EXPECT_TRUE(judge.judge({"d0", "d1", "d2"}, kPlan).partitioned.empty());
}

TEST(PartitionJudge, ADeviceOutsideThePlanGoesFirstAndEachCutCostsOneDevice) {
  PartitionJudge judge;
  judge.report("d4", {"d0"});
  judge.report("d0", {"d4"});
  judge.report("d1", {"d2"});
  judge.report("d2", {"d1"});
  const auto changes = judge.judge(kAlive, kPlan);
  EXPECT_EQ(changes.partitioned, (std::vector<std::string>{"d4", "d2"}));
}

}  // namespace
}  // namespace asteroid::actors
