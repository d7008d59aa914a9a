// The planner answers plan and re-plan requests by message.
#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "actors/connect.h"
#include "actors/planner_actor.h"
#include "actors/system_config.h"
#include "messages/transport.h"
#include "planner/baselines.h"
#include "planner/json_io.h"
#include "planner/rank.h"
#include "tests/support/local_nodes.h"

namespace asteroid::actors {
namespace {

// Three devices, four layers; the fast one alone could not hold every layer.
planner::Cluster cluster() {
  planner::Cluster c;
  c.default_bandwidth_mbps = 1000;
  for (const char* id : {"a", "b", "c"}) c.devices.push_back({id, "", 0, 64, std::nullopt});
  return c;
}

planner::Profile profile() {
  planner::Profile p;
  p.model = "toy";
  for (int l = 0; l < 4; ++l) p.layers.push_back({"l" + std::to_string(l), 4e6, 1e4, 1e4});
  for (const char* id : {"a", "b", "c"}) {
    planner::DeviceProfile d;
    d.batch = {1, 16};
    const double speed = id[0] == 'a' ? 1.0 : 2.0;
    for (int l = 0; l < 4; ++l) {
      d.fwd_ms.push_back({0.1 * speed, 1.6 * speed});
      d.bwd_ms.push_back({0.2 * speed, 3.2 * speed});
    }
    p.devices[id] = d;
  }
  return p;
}

messages::PlanRequest request() {
  messages::PlanRequest r;
  r.cluster_json = planner::cluster_to_json(cluster()).dump();
  r.profile_json = planner::profile_to_json(profile()).dump();
  r.strategy = "hpp";
  r.batch = 32;
  r.microbatches = 2;
  r.optimizer = messages::OptimizerKind::sgd;
  return r;
}

messages::PlanResult ask(caf::actor_system& system, const caf::actor& planner, const messages::PlanRequest& r) {
  ScopedMailbox asker{system};
  return request_plan(asker, planner, r, std::chrono::seconds(30));
}

TEST(PlannerActor, PlansAndReplansByMessage) {
  AsteroidConfig config;
  caf::actor_system system(config);
  auto planner = system.spawn(planner_actor);
  const auto planned = ask(system, planner, request());
  ASSERT_FALSE(planned.plan_json.empty()) << planned.reason;
  EXPECT_NE(planned.explanation.find("T_round"), std::string::npos) << planned.explanation;
  const auto plan = planner::plan_from_json(nlohmann::json::parse(planned.plan_json), "reply");
  EXPECT_EQ(plan.batch, 32);

  // Lose a device the plan uses: the re-plan must not use it.
  messages::PlanRequest again = request();
  again.running_plan_json = planned.plan_json;
  const std::string lost = plan.stages.front().devices.front().id;
  again.lost_devices = {lost};
  const auto replanned = ask(system, planner, again);
  ASSERT_FALSE(replanned.plan_json.empty()) << replanned.reason;
  const auto after = planner::plan_from_json(nlohmann::json::parse(replanned.plan_json), "reply");
  for (const auto& stage : after.stages) {
    for (const auto& d : stage.devices) EXPECT_NE(d.id, lost);
  }
  caf::anon_send_exit(planner, caf::exit_reason::user_shutdown);
}

TEST(PlannerActor, BadRequestsGetAReasonNotACrash) {
  messages::PlanRequest r = request();
  r.profile_json = "{\"layers\": 3}";
  const auto result = plan_for(r);
  EXPECT_TRUE(result.plan_json.empty());
  EXPECT_FALSE(result.reason.empty());
  r = request();
  r.strategy = "magic";
  EXPECT_NE(plan_for(r).reason.find("magic"), std::string::npos) << plan_for(r).reason;
}

TEST(PlannerActor, AJobsFirstPlanIsRankedAndComesWithTheBestDeviceAlone) {
  AsteroidConfig config;
  caf::actor_system system(config);
  auto planner = system.spawn(planner_actor);
  messages::PlanRequest r = request();
  r.microbatches = 0;  // searched
  r.rank = "simulated";
  r.min_gain = 0.05;
  const auto answer = ask(system, planner, r);
  caf::anon_send_exit(planner, caf::exit_reason::user_shutdown);
  ASSERT_FALSE(answer.plan_json.empty()) << answer.reason;
  // The same as ranking here: plan, prediction and the ranking's candidates.
  planner::TrainingConfig tc;
  tc.batch = 32;
  tc.search_microbatches = true;
  tc.optimizer = messages::OptimizerKind::sgd;
  const planner::ProfileTables tables(cluster(), profile());
  const planner::RankedPlan direct =
      planner::rank_plans(tables, tc, planner::Strategy::hpp, planner::Ranking::simulated, 0.05);
  const nlohmann::json file = nlohmann::json::parse(answer.plan_json);
  EXPECT_EQ(planner::plan_to_json(planner::plan_from_json(file, "reply")), planner::plan_to_json(direct.result.plan));
  ASSERT_TRUE(file.contains("ranking")) << file.dump();
  EXPECT_EQ(file["ranking"]["candidates"].size(), direct.candidates.size());
  EXPECT_EQ(file["ranking"]["by"], "simulated");
  // The table (but for its planning time) with the candidates.
  const std::string expected_table = planner::explain_ranked_plan(direct);
  const auto candidates = expected_table.find("ranked by simulated round");
  ASSERT_NE(candidates, std::string::npos) << expected_table;
  EXPECT_NE(answer.explanation.find(expected_table.substr(candidates)), std::string::npos) << answer.explanation;
  // The best device alone, with its predicted round: the job's baseline.
  ASSERT_FALSE(answer.single_plan_json.empty());
  const planner::Plan single = planner::plan_from_json(nlohmann::json::parse(answer.single_plan_json), "single");
  const planner::PlanResult expected = planner::plan_single(tables, tc);
  ASSERT_EQ(single.stages.size(), 1u);
  ASSERT_EQ(single.stages[0].devices.size(), 1u);
  EXPECT_EQ(single.stages[0].devices[0].id, expected.plan.stages[0].devices[0].id);
  EXPECT_DOUBLE_EQ(single.predicted_round_ms, expected.evaluation.round_ms);
}

TEST(PlannerActor, RunsOnTheNodeOfTheDeviceNamed) {
  test_support::LocalNodes nodes({"d0", "d1"});
  AsteroidConfig config;
  caf::actor_system system(config);
  ScopedMailbox self{system};
  const caf::actor planner = spawn_planner(self, nodes.cluster(), "d1", std::chrono::seconds(10));
  // It lives in d1's process, not here nor in d0's.
  std::string failure;
  const planner::Device& d1 = nodes.cluster().devices[1];
  const auto node = connect_node(self, d1, std::chrono::seconds(5), failure);
  ASSERT_TRUE(node) << failure;
  EXPECT_EQ(planner.node(), node->id);
  EXPECT_NE(planner.node(), system.node());
  const auto answer = ask(system, planner, request());
  EXPECT_FALSE(answer.plan_json.empty()) << answer.reason;
  caf::anon_send_exit(planner, caf::exit_reason::user_shutdown);

  try {
    spawn_planner(self, nodes.cluster(), "nobody", std::chrono::seconds(5));
    ADD_FAILURE() << "a device not in the cluster";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no such device"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nobody"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace asteroid::actors
