// The planner answers plan and re-plan requests by message.
#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "actors/planner_actor.h"
#include "actors/system_config.h"
#include "messages/transport.h"
#include "planner/json_io.h"

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
  caf::scoped_actor self{system};
  messages::PlanResult result;
  self->request(planner, std::chrono::seconds(30), messages::to_wire(r))
      .receive(
          [&](messages::WireMessage& reply) {
            auto decoded = messages::from_wire(std::move(reply));
            ASSERT_TRUE(decoded.ok()) << decoded.error;
            result = std::get<messages::PlanResult>(*decoded.message);
          },
          [&](caf::error& e) { FAIL() << system.render(e); });
  return result;
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

}  // namespace
}  // namespace asteroid::actors
