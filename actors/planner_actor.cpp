#include "actors/planner_actor.h"

#include <caf/all.hpp>

#include <nlohmann/json.hpp>

#include "messages/transport.h"
#include "planner/json_io.h"
#include "planner/replan.h"
#include "planner/report.h"
#include "planner/search.h"

namespace asteroid::actors {

messages::PlanResult plan_for(const messages::PlanRequest& request) {
  messages::PlanResult result;
  try {
    const auto cluster = planner::cluster_from_json(nlohmann::json::parse(request.cluster_json), "cluster");
    const auto profile = planner::profile_from_json(nlohmann::json::parse(request.profile_json), "profile");
    planner::TrainingConfig config;
    config.batch = static_cast<int>(request.batch);
    config.microbatches = request.microbatches == 0 ? 1 : static_cast<int>(request.microbatches);
    config.search_microbatches = request.microbatches == 0;
    config.optimizer = request.optimizer;
    config.wire = planner::parse_wire_policy(request.wire.empty() ? "exact" : request.wire);
    config.codec_block = request.codec_block;
    planner::Plan plan;
    planner::Evaluation evaluation;
    double planning_ms = 0;
    if (request.running_plan_json.empty()) {
      const planner::ProfileTables tables(cluster, profile);
      auto planned = planner::make_plan(tables, config, planner::parse_strategy(request.strategy));
      if (!planned.feasible) {
        result.reason = planned.why;
        return result;
      }
      plan = planned.plan;
      evaluation = planned.evaluation;
      planning_ms = planned.planning_ms;
    } else {
      const auto running = planner::plan_from_json(nlohmann::json::parse(request.running_plan_json), "running plan");
      auto replanned = request.heavy ? planner::replan_heavy(running, cluster, profile, config, request.lost_devices,
                                                             request.added_devices)
                                     : planner::replan_lightweight(running, cluster, profile, config,
                                                                   request.lost_devices, request.added_devices);
      if (!replanned.feasible) {
        result.reason = replanned.why;
        return result;
      }
      plan = replanned.plan;
      evaluation = replanned.evaluation;
      planning_ms = replanned.planning_ms;
    }
    result.plan_json = planner::plan_to_json(plan).dump();
    result.explanation = planner::explain_plan(plan, evaluation, planning_ms);
  } catch (const std::exception& e) {
    result.plan_json.clear();
    result.reason = e.what();
  }
  return result;
}

void planner_actor(caf::blocking_actor* self) {
  bool running = true;
  self->receive_while([&] { return running; })(
      [&](messages::WireMessage& wire) -> messages::WireMessage {
        auto decoded = messages::from_wire(std::move(wire));
        if (!decoded.ok()) {
          return messages::to_wire(messages::Error{messages::ErrorCode::invalid_message, decoded.error});
        }
        auto* request = std::get_if<messages::PlanRequest>(&*decoded.message);
        if (!request) {
          return messages::to_wire(messages::Error{
              messages::ErrorCode::invalid_request,
              std::string("the planner does not accept ") + messages::kind_name(*decoded.message) + " messages"});
        }
        return messages::to_wire(plan_for(*request));
      },
      [&](caf::exit_msg& exit) {
        self->fail_state(exit.reason);
        running = false;
      });
}

}  // namespace asteroid::actors
