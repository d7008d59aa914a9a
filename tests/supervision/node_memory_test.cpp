// Bounded memory on long-lived nodes: several jobs, with plan switches and
// a lost device, run one after the other on the same node processes. While
// a job runs its nodes keep its states (replicas, committed states); a
// superseded plan's go at the new plan's first commit; when the job
// finishes (release_job) every node is back to what it kept before it.
#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>

#include "actors/ask.h"
#include "actors/connect.h"
#include "actors/system_config.h"
#include "compute/profiler.h"
#include "planner/json_io.h"
#include "supervision/job_supervisor.h"
#include "tests/support/local_nodes.h"

namespace asteroid::supervision {
namespace {

using planner::Plan;
using planner::Stage;
using test_support::LocalNodes;

constexpr uint64_t kRounds = 8;
const char* const kModel = "fmnist-cnn";  // 6 layers

Plan plan_of(std::vector<Stage> stages) {
  Plan plan;
  plan.strategy = "custom";
  plan.batch = 32;
  plan.microbatches = 4;
  plan.microbatch_size = 8;
  plan.stages = std::move(stages);
  return plan;
}

// Two plans that share no layer range, so switching from one to the other
// supersedes every range the first one kept.
Plan first_plan() { return plan_of({Stage{0, 2, {{"d0", 8}}}, Stage{2, 4, {{"d1", 4}, {"d2", 4}}}, Stage{4, 6, {{"d3", 8}}}}); }
Plan second_plan() { return plan_of({Stage{0, 3, {{"d0", 8}}}, Stage{3, 6, {{"d4", 8}}}}); }

// What each live node keeps now, as it answers hello.
std::map<std::string, messages::NodeInfo> node_infos(caf::actor_system& system, const planner::Cluster& cluster,
                                                     const std::set<std::string>& skip = {}) {
  actors::ScopedMailbox self(system);
  std::map<std::string, messages::NodeInfo> infos;
  for (const auto& d : cluster.devices) {
    if (skip.count(d.id)) continue;
    std::string failure;
    auto node = actors::connect_node(self, d, std::chrono::seconds(10),
                                     failure);
    if (!node) throw std::runtime_error(d.id + ": " + failure);
    auto answer = actors::ask(self, node->actor, messages::Hello{}, std::chrono::seconds(10), failure);
    auto* info = answer ? std::get_if<messages::NodeInfo>(&*answer) : nullptr;
    if (!info) throw std::runtime_error(d.id + " did not answer hello: " + failure);
    infos[d.id] = *info;
  }
  return infos;
}

uint64_t total_bytes(const std::map<std::string, messages::NodeInfo>& infos) {
  uint64_t total = 0;
  for (const auto& [id, info] : infos) total += info.kept_bytes;
  return total;
}

struct JobRun {
  std::map<std::string, messages::NodeInfo> before_switch, after_switch;  // mid-job
  std::map<std::string, uint64_t> released;                               // release_job's answer
  size_t failures = 0;
  Plan final_plan;
};

// Trains kRounds rounds of job `job_id` on first_plan(), switching to
// second_plan() before round 4; `before_round(r)` may inject a fault.
JobRun run_job(caf::actor_system& system, LocalNodes& nodes, const std::string& job_id,
               const std::function<void(uint64_t)>& before_round = {}, const std::set<std::string>& dead = {}) {
  actors::JobSpec spec;
  spec.cluster = nodes.cluster();
  spec.plan = first_plan();
  spec.model = kModel;
  spec.job_id = job_id;
  SupervisionOptions options;
  options.profile = uniform_profile(compute::measure_layers(kModel), spec.cluster);
  options.reconnect_every = std::chrono::milliseconds(50);
  options.heartbeat.deadline = std::chrono::milliseconds(2000);
  JobSupervisor job(system, spec, options);
  job.start();
  JobRun run;
  std::set<uint64_t> announced;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
  while (job.committed_rounds() < kRounds) {
    if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("training did not finish in time");
    if (job.next_round() < kRounds && announced.insert(job.next_round()).second) {
      const uint64_t r = job.next_round();
      if (r == 4) {
        run.before_switch = node_infos(system, nodes.cluster(), dead);
        job.switch_plan(second_plan());
      }
      // Two rounds after the switch the new plan has committed, and the
      // releases it sent have been answered long before the hello.
      if (r == 7) run.after_switch = node_infos(system, nodes.cluster(), dead);
      if (before_round) before_round(r);
    }
    if (job.next_round() < kRounds) {
      job.run_round();
    } else {
      job.flush();
    }
  }
  job.final_states();
  run.released = job.coordinator().release_job();
  run.failures = job.failures().size();
  run.final_plan = job.plan();
  return run;
}

TEST(NodeMemory, KeptStatesOfFinishedJobsAndSupersededPlansAreReleased) {
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"});
  actors::AsteroidConfig config;
  caf::actor_system system(config);
  const auto baseline = node_infos(system, nodes.cluster());
  EXPECT_EQ(total_bytes(baseline), 0u);

  for (const std::string job : {"memory-1", "memory-2"}) {
    const JobRun run = run_job(system, nodes, job);
    // The first plan's hosts and replica holders keep its states...
    EXPECT_GT(run.before_switch.at("d1").kept_bytes, 0u) << job;
    EXPECT_GT(run.before_switch.at("d3").kept_bytes, 0u) << job;
    // ... until the second plan commits: d1, d2 and d3 are not in it.
    for (const char* gone : {"d1", "d2", "d3"}) EXPECT_EQ(run.after_switch.at(gone).kept_bytes, 0u) << job << " " << gone;
    EXPECT_GT(run.after_switch.at("d4").kept_bytes, 0u) << job;
    // d0 hosts [0, 3) and holds the replica of d4's [3, 6): one committed
    // state and at most two replica rounds; nothing of [0, 2) any more.
    EXPECT_LE(run.after_switch.at("d0").kept_states, 3u) << job;
    ASSERT_EQ(run.released.size(), 5u) << job;
    for (const auto& [id, bytes] : run.released) EXPECT_EQ(bytes, baseline.at(id).kept_bytes) << job << " " << id;
    const auto after = node_infos(system, nodes.cluster());
    for (const auto& [id, info] : after) {
      EXPECT_EQ(info.kept_bytes, baseline.at(id).kept_bytes) << job << " " << id;
      EXPECT_EQ(info.kept_states, 0u) << job << " " << id;
    }
  }

  // A job that loses a device of its second plan and recovers on a third
  // one: the survivors end at baseline too.
  const JobRun lossy = run_job(system, nodes, "memory-3", [&](uint64_t round) {
    if (round == 6) nodes.process("d4").signal(SIGKILL);
  }, {"d4"});
  ASSERT_EQ(lossy.failures, 1u);
  EXPECT_NE(planner::plan_to_json(lossy.final_plan), planner::plan_to_json(second_plan()));
  EXPECT_EQ(lossy.released.count("d4"), 0u);
  EXPECT_EQ(lossy.released.size(), 4u);
  const auto after = node_infos(system, nodes.cluster(), {"d4"});
  EXPECT_EQ(total_bytes(after), 0u);
}

}  // namespace
}  // namespace asteroid::supervision
