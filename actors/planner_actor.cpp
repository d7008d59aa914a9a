#include "actors/planner_actor.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <nlohmann/json.hpp>

#include <stdexcept>

#include "actors/ask.h"
#include "actors/connect.h"
#include "actors/transport.h"
#include "messages/transport.h"
#include "planner/baselines.h"
#include "planner/json_io.h"
#include "planner/rank.h"
#include "planner/replan.h"
#include "planner/report.h"
#include "planner/search.h"

namespace asteroid::actors {
namespace {

// A job's first plan, ranked (the contract in the header).
messages::PlanResult ranked_plan(const messages::PlanRequest& request, const planner::ProfileTables& tables,
                                 const planner::TrainingConfig& config) {
  messages::PlanResult result;
  const planner::Ranking ranking = planner::parse_ranking(request.rank);
  const planner::RankedPlan ranked =
      planner::rank_plans(tables, config, planner::parse_strategy(request.strategy), ranking, request.min_gain);
  const planner::PlanResult& chosen = ranked.result;
  if (!chosen.feasible || chosen.plan.stages.empty()) {
    result.reason = chosen.why.empty() ? chosen.evaluation.infeasible_reason : chosen.why;
    return result;
  }
  nlohmann::json extra = planner::evaluation_to_json(chosen.evaluation, config.optimizer, chosen.planning_ms);
  extra["ranking"] = planner::ranking_to_json(ranked, ranking);
  result.plan_json = planner::plan_file_json(chosen.plan, extra).dump();
  result.explanation = planner::explain_ranked_plan(ranked);
  planner::PlanResult single = planner::plan_single(tables, config);
  if (single.feasible) {
    single.plan.predicted_round_ms = single.evaluation.round_ms;
    result.single_plan_json = planner::plan_to_json(single.plan).dump();
  }
  return result;
}

}  // namespace

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
    if (!request.rank.empty() && request.running_plan_json.empty()) {
      return ranked_plan(request, planner::ProfileTables(cluster, profile), config);
    }
    // A plan or a re-plan: its plan, or why none fits.
    auto adopt = [&](const auto& outcome) {
      if (!outcome.feasible) {
        result.reason = outcome.why;
        return false;
      }
      plan = outcome.plan;
      evaluation = outcome.evaluation;
      planning_ms = outcome.planning_ms;
      return true;
    };
    if (request.running_plan_json.empty()) {
      const planner::ProfileTables tables(cluster, profile);
      if (!adopt(planner::make_plan(tables, config, planner::parse_strategy(request.strategy)))) return result;
    } else {
      const auto running = planner::plan_from_json(nlohmann::json::parse(request.running_plan_json), "running plan");
      if (!adopt(request.heavy ? planner::replan_heavy(running, cluster, profile, config, request.lost_devices,
                                                       request.added_devices)
                               : planner::replan_lightweight(running, cluster, profile, config, request.lost_devices,
                                                             request.added_devices)))
        return result;
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

caf::actor spawn_planner(Mailbox& asker, const planner::Cluster& cluster, const std::string& device,
                         std::chrono::milliseconds timeout) {
  if (device.empty()) return asker.system().spawn(planner_actor);
  const planner::Device* d = nullptr;
  for (const auto& candidate : cluster.devices)
    if (candidate.id == device) d = &candidate;
  if (!d) throw std::runtime_error("--planner-on " + device + ": no such device in the cluster");
  const std::string where = "the planner's device '" + device + "' at " + d->host + ":" + std::to_string(d->port);
  std::string failure;
  const auto node = connect_node(asker, *d, timeout, failure);
  if (!node) throw std::runtime_error(where + " is unreachable: " + failure);
  const Spawned spawned = remote_spawn_actor(asker, node->id, "planner", timeout);
  if (!spawned.actor) throw std::runtime_error(where + " could not spawn a planner actor: " + spawned.error);
  return spawned.actor;
}

messages::PlanResult request_plan(Mailbox& asker, const caf::actor& planner,
                                  const messages::PlanRequest& request, std::chrono::milliseconds timeout) {
  std::string failure;
  auto reply = ask(asker, planner, request, timeout, failure);
  if (!reply) throw std::runtime_error("the planner did not answer: " + failure);
  auto* result = std::get_if<messages::PlanResult>(&*reply);
  if (!result) throw std::runtime_error(std::string("the planner answered with ") + messages::kind_name(*reply));
  return std::move(*result);
}

}  // namespace asteroid::actors
