// Pipeline replay across real node processes: a device that dies, freezes,
// crashes in the middle of an all-reduce or of a replication, or comes back,
// must cost seconds, never the training. In each case the job reaches its
// rounds, the committed rounds are 0, 1, ..., N-1 (no gap, no repeat), every
// committed loss equals the fault-free run's (so the model after recovery is
// the one before it, not a fresh one), and the final accuracy on a fixed
// test subset is within two points of the fault-free run.
#include <ATen/ATen.h>
#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/io/middleman.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <numeric>
#include <optional>
#include <tuple>

#include "actors/system_config.h"
#include "compute/dataset.h"
#include "compute/evaluate.h"
#include "compute/profiler.h"
#include "planner/cost_model.h"
#include "planner/json_io.h"
#include "messages/tensor_codec.h"
#include "supervision/checkpoint.h"
#include "supervision/job_actor.h"
#include "supervision/job_supervisor.h"
#include "tests/support/local_nodes.h"
#include "tests/support/temp_dir.h"

namespace asteroid::supervision {
namespace {

using planner::Plan;
using planner::Stage;
using test_support::LocalNodes;

constexpr int kRounds = 10;
constexpr int kBatch = 32;
constexpr int kEvalSamples = 1000;
const char* const kModel = "fmnist-cnn";  // conv1 pool1 conv2 pool2 fc1 fc2

// Three stages; the middle one a group of two; the first and last stages are
// single devices that replicate to their neighbours.
Plan three_stage_plan() {
  Plan plan;
  plan.strategy = "custom";
  plan.batch = kBatch;
  plan.microbatches = 4;
  plan.microbatch_size = kBatch / 4;
  plan.stages = {Stage{0, 2, {{"d0", 8}}}, Stage{2, 4, {{"d1", 4}, {"d2", 4}}}, Stage{4, 6, {{"d3", 8}}}};
  return plan;
}

struct Outcome {
  std::vector<actors::RoundReport> committed;
  std::vector<FailureRecord> failures;
  std::vector<SupervisionEvent> events;
  std::vector<std::string> statuses_at_failure;  // the job actor's answers, asked as each failure's recovery starts
  planner::Plan final_plan;
  double accuracy = 0;
};

const std::vector<planner::LayerInfo>& layer_infos() {
  static const auto layers = compute::measure_layers(kModel);
  return layers;
}

// Trains `rounds` rounds; `before_round(r)` runs before round r starts (the
// first time it starts) and may inject a fault.
Outcome train(LocalNodes& nodes, const std::function<void(uint64_t)>& before_round = {},
              const std::string& checkpoint = "", Recovery recovery = Recovery::lightweight,
              const Plan& plan = three_stage_plan(), uint64_t rounds = kRounds,
              std::chrono::milliseconds round_timeout = std::chrono::milliseconds(0)) {
  actors::AsteroidConfig config;
  caf::actor_system system(config);
  actors::JobSpec spec;
  spec.cluster = nodes.cluster();
  spec.plan = plan;
  spec.model = kModel;
  spec.job_id = "fault-test";
  if (round_timeout.count() > 0) spec.round_timeout = round_timeout;
  SupervisionOptions options;
  options.profile = uniform_profile(layer_infos(), spec.cluster);
  options.reconnect_every = std::chrono::milliseconds(50);
  options.recovery = recovery;
  // ctest runs these tests two at a time on a 2-core machine: a generous
  // deadline keeps a busy but live node from being declared dead (the
  // default, 700 ms, is for an unloaded cluster).
  options.heartbeat.deadline = std::chrono::milliseconds(2000);
  if (!checkpoint.empty()) {
    options.checkpoint_every = 3;
    options.checkpoint_path = checkpoint;
  }
  Outcome out;
  // Under its job actor, as asteroid train runs it. At every failure the
  // driver itself asks the job actor for the status: blocked in that
  // request, it cannot answer; the job actor does.
  run_job(system, [&](JobDriver& driver) {
    JobSupervisor job(system, spec, options, &driver.mailbox());
    job.on_event([&](const SupervisionEvent& e) {
      out.events.push_back(e);
      if (e.kind == "failure") {
        caf::scoped_actor self{system};
        self->request(driver.job(), std::chrono::seconds(10), actors::status_atom::value)
            .receive([&](const std::string& status) { out.statuses_at_failure.push_back(status); },
                     [&](caf::error& e) { out.statuses_at_failure.push_back("error: " + system.render(e)); });
      }
    });
    job.on_status([&](const std::string& status) { driver.publish(status); });
    job.start();
    std::set<uint64_t> announced;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
    while (job.committed_rounds() < rounds) {
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("training did not finish in time");
      if (job.next_round() < rounds) {
        if (before_round && announced.insert(job.next_round()).second) before_round(job.next_round());
        for (const auto& r : job.run_round()) out.committed.push_back(r);
      } else {
        for (const auto& r : job.flush()) out.committed.push_back(r);
      }
    }
    std::vector<at::Tensor> parts;
    for (const auto& state : job.final_states()) parts.push_back(messages::to_tensor(state.weights));
    out.failures = job.failures();
    out.final_plan = job.plan();
    const auto test = compute::open_dataset(kModel, compute::Split::test);
    out.accuracy = compute::evaluate_weights(kModel, at::cat(parts), *test, 500, kEvalSamples).accuracy;
  });
  return out;
}

const Outcome& fault_free() {
  static const Outcome outcome = [] {
    LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"});
    return train(nodes);
  }();
  return outcome;
}

void expect_continuity(const Outcome& run, const Outcome& reference = fault_free()) {
  ASSERT_EQ(run.committed.size(), reference.committed.size());
  for (size_t r = 0; r < run.committed.size(); ++r) {
    EXPECT_EQ(run.committed[r].round, r) << "committed rounds must continue without a gap or a repeat";
    const double expected = reference.committed[r].loss;
    EXPECT_NEAR(run.committed[r].loss, expected, 1e-3 * std::abs(expected))
        << "round " << r << ": the loss after recovery does not continue the loss before it";
  }
  EXPECT_NEAR(run.accuracy, reference.accuracy, 0.02);
}

bool uses(const Plan& plan, const std::string& device) {
  for (const auto& stage : plan.stages) {
    for (const auto& d : stage.devices) {
      if (d.id == device) return true;
    }
  }
  return false;
}

TEST(PipelineReplay, FaultFreeRunTrains) {
  const Outcome& run = fault_free();
  ASSERT_EQ(run.committed.size(), static_cast<size_t>(kRounds));
  EXPECT_LT(run.committed.back().loss, run.committed.front().loss);
  EXPECT_TRUE(run.failures.empty());
}

TEST(PipelineReplay, KilledGroupMember) {
  // The lightweight re-plan keeps every stage's layers: d0 and d3 stay as
  // they are, rolled back by the abort; only stage 1, now d1 alone, gets its
  // state again (to seed its new replica holder, d3). Before survivors
  // stayed, all 6 layers went through the coordinator to fresh actors.
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {}, {{"d2", {"--crash-at", "backward:4"}}});
  const Outcome run = train(nodes);
  expect_continuity(run);
  ASSERT_EQ(run.failures.size(), 1u);
  EXPECT_EQ(run.failures[0].round, 4u);
  EXPECT_EQ(run.failures[0].replan, "lightweight");
  EXPECT_EQ(run.failures[0].layers_moved, 2);
  EXPECT_FALSE(uses(run.final_plan, "d2"));
  EXPECT_TRUE(uses(run.final_plan, "d1")) << "the surviving member keeps its stage";
}

TEST(PipelineReplay, TheJobAnswersStatusRequestsWhileItRecovers) {
  // d2 dies in round 4: as the recovery starts, the job actor answers for
  // the job (its driver is busy recovering): recovering round 4 from the
  // abort on, because of d2, on the plan in force.
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {}, {{"d2", {"--crash-at", "backward:4"}}});
  const Outcome run = train(nodes);
  expect_continuity(run);
  ASSERT_EQ(run.statuses_at_failure.size(), 1u);
  const auto status = nlohmann::json::parse(run.statuses_at_failure[0]);
  EXPECT_EQ(status["phase"], "recovering") << status;
  EXPECT_EQ(status["step"], "aborting") << status;
  EXPECT_EQ(status["recovery"]["round"], 4) << status;
  EXPECT_NE(status["recovery"]["cause"].get<std::string>().find("d2"), std::string::npos) << status;
  EXPECT_EQ(status["plan"]["stages"].size(), 3u) << status;
  EXPECT_LE(status["next_round"].get<uint64_t>(), 5u) << status;
  EXPECT_EQ(status["devices"]["d4"], "idle") << status;
}

TEST(PipelineReplay, KilledOnlyDeviceOfAStage) {
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {}, {{"d3", {"--crash-at", "forward:5"}}});
  const Outcome run = train(nodes);
  expect_continuity(run);
  ASSERT_EQ(run.failures.size(), 1u);
  EXPECT_FALSE(uses(run.final_plan, "d3"));
  EXPECT_EQ(run.final_plan.stages.back().end, 6);
}

TEST(PipelineReplay, FrozenNodeIsDetectedLikeAKilledOne) {
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"});
  const auto frozen = std::chrono::steady_clock::now();
  const Outcome run = train(nodes, [&](uint64_t round) {
    if (round == 4) nodes.process("d1").signal(SIGSTOP);
  });
  nodes.process("d1").signal(SIGCONT);
  expect_continuity(run);
  ASSERT_EQ(run.failures.size(), 1u);
  EXPECT_EQ(run.failures[0].devices, std::vector<std::string>{"d1"});
  EXPECT_FALSE(uses(run.final_plan, "d1"));
  (void)frozen;
}

TEST(PipelineReplay, TwoFailuresInDifferentRounds) {
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {},
                   {{"d2", {"--crash-at", "backward:2"}}, {"d3", {"--crash-at", "forward:7"}}});
  const Outcome run = train(nodes);
  expect_continuity(run);
  ASSERT_EQ(run.failures.size(), 2u);
  EXPECT_EQ(run.failures[0].round, 2u);
  EXPECT_EQ(run.failures[1].round, 7u);
}

TEST(PipelineReplay, FailureDuringTheAllReduce) {
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {}, {{"d1", {"--crash-at", "allreduce:5"}}});
  const Outcome run = train(nodes);
  expect_continuity(run);
  ASSERT_EQ(run.failures.size(), 1u);
  EXPECT_EQ(run.failures[0].round, 5u);
}

// A lossy wire on both boundaries (int8 activations and gradients, blocks
// within a sample) with replication beside the rounds: a group member killed
// mid-round re-splits its group, which changes nothing the next stage
// decodes, so the replay continues the fault-free run of the same wire.
TEST(PipelineReplay, KilledGroupMemberWithACompressedWire) {
  Plan plan = three_stage_plan();
  plan.stages[0].to_next = wire_codec::Codec::int8;
  plan.stages[1].to_next = wire_codec::Codec::int8;
  const Outcome reference = [&] {
    LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"});
    return train(nodes, {}, "", Recovery::lightweight, plan);
  }();
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {}, {{"d2", {"--crash-at", "backward:5"}}});
  const Outcome run = train(nodes, {}, "", Recovery::lightweight, plan);
  expect_continuity(run, reference);
  ASSERT_EQ(run.failures.size(), 1u);
  EXPECT_FALSE(uses(run.final_plan, "d2"));
  // The wire is part of the job's mathematics: the re-plan keeps it.
  ASSERT_EQ(run.final_plan.stages.size(), 3u);
  EXPECT_EQ(run.final_plan.stages[0].to_next, wire_codec::Codec::int8);
  EXPECT_EQ(run.final_plan.stages[1].to_next, wire_codec::Codec::int8);
  // And it is not the exact wire's run.
  bool differs = false;
  for (size_t r = 0; r < run.committed.size(); ++r)
    differs |= std::abs(run.committed[r].loss - fault_free().committed[r].loss) > 1e-4 * fault_free().committed[r].loss;
  EXPECT_TRUE(differs) << "the int8 wire gave the exact wire's losses: was it used?";
}

TEST(PipelineReplay, FailureDuringReplication) {
  // d0 runs the first stage alone and dies while sending the replica of
  // round 5 (or the first round after it that is replicated: replication
  // coalesces rounds) to d1: that round never commits and training is
  // replayed from the last replica.
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {}, {{"d0", {"--crash-at", "replicate:5"}}});
  const Outcome run = train(nodes);
  expect_continuity(run);
  ASSERT_EQ(run.failures.size(), 1u);
  EXPECT_FALSE(uses(run.final_plan, "d0"));
}

TEST(PipelineReplay, KilledNodeRestartsAndRejoins) {
  // 30 rounds: the node restarted before round 4 has 26 rounds to be seen
  // back and admitted, however loaded the machine (10 were too few once).
  constexpr uint64_t kLong = 30;
  const Outcome reference = [&] {
    LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"});
    return train(nodes, {}, "", Recovery::lightweight, three_stage_plan(), kLong);
  }();
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"});
  const Outcome run = train(
      nodes,
      [&](uint64_t round) {
        if (round == 2) nodes.process("d2").signal(SIGKILL);
        if (round == 4) nodes.restart("d2");
      },
      "", Recovery::lightweight, three_stage_plan(), kLong);
  expect_continuity(run, reference);
  ASSERT_GE(run.failures.size(), 1u);
  bool rejoined = false;
  for (const auto& e : run.events) rejoined = rejoined || e.kind == "rejoin";
  EXPECT_TRUE(rejoined) << "the restarted node was not admitted again";
  EXPECT_TRUE(uses(run.final_plan, "d2"));
}

TEST(PipelineReplay, ADeviceLostDuringTheRedeployIsRecoveredOnTheSurvivors) {
  // d2 dies in round 5; the re-plan keeps d1 alone in the middle stage, and
  // d1 dies when it is assigned that stage (its first assignment after the
  // one of round 0): the redeploy fails half way, and the stage's state
  // lives only in what the first attempt collected.
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {},
                   {{"d2", {"--crash-at", "backward:5"}}, {"d1", {"--crash-at", "assign:1"}}});
  const Outcome run = train(nodes);
  expect_continuity(run);
  ASSERT_GE(run.failures.size(), 2u);
  EXPECT_EQ(run.failures.front().replan, "interrupted") << "the first attempt should have been cut short";
  EXPECT_NE(run.failures.front().interrupted_by.find("d1"), std::string::npos) << run.failures.front().interrupted_by;
  EXPECT_EQ(run.failures.back().kind, "during-recovery");
  EXPECT_NE(run.failures.back().replan, "interrupted");
  EXPECT_FALSE(uses(run.final_plan, "d1"));
  EXPECT_FALSE(uses(run.final_plan, "d2"));
}

TEST(PipelineReplay, ADeviceFrozenWhileTheRedeployConnectsIsLostByTheHeartbeatVerdict) {
  // d2 dies in round 5; d1 freezes when the redeploy asks it to connect to
  // its new plan's peers. A frozen node never answers and never goes down:
  // the heartbeat monitor's verdict ends the wait, not the connection
  // request's deadline, and the recovery starts again without d1.
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {},
                   {{"d2", {"--crash-at", "backward:5"}}, {"d1", {"--freeze-at", "peers:1"}}});
  const Outcome run = train(nodes);
  expect_continuity(run);
  ASSERT_GE(run.failures.size(), 2u);
  EXPECT_EQ(run.failures.front().replan, "interrupted");
  EXPECT_NE(run.failures.front().interrupted_by.find("device 'd1' stopped answering heartbeats while the plan's "
                                                     "devices connected"),
            std::string::npos)
      << run.failures.front().interrupted_by;
  EXPECT_FALSE(uses(run.final_plan, "d1"));
  EXPECT_FALSE(uses(run.final_plan, "d2"));
}

TEST(PipelineReplay, AStageStuckWhileItsNodeLivesIsLostAtTheAbort) {
  // d2's stage blocks for good in the backward of round 5 while its node
  // answers heartbeats: the round stalls, and the abort that follows needs
  // every member's confirmation, which d2's stage cannot give. d2 is lost,
  // its group goes on with d1 alone, and no round is lost or repeated.
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {}, {{"d2", {"--hang-at", "backward:5"}}});
  const Outcome run = train(nodes, {}, "", Recovery::lightweight, three_stage_plan(), kRounds,
                            std::chrono::milliseconds(3000));
  expect_continuity(run);
  // The short stall limit this test sets can also catch a round slowed by
  // the machine's load: such a stall loses no device and replays in place.
  // The one that matters is the first that loses a device.
  const auto lost = std::find_if(run.failures.begin(), run.failures.end(),
                                 [](const FailureRecord& r) { return !r.devices.empty(); });
  ASSERT_NE(lost, run.failures.end()) << "no failure lost a device";
  const FailureRecord& f = *lost;
  EXPECT_EQ(f.kind, "round-stalled");
  EXPECT_EQ(f.round, 5u);
  EXPECT_EQ(f.devices, std::vector<std::string>{"d2"}) << f.kind << " " << f.replan << " " << f.interrupted_by;
  EXPECT_FALSE(uses(run.final_plan, "d2"));
}

TEST(PipelineReplay, DataWhoseSenderCannotBeNamedCostsTheReceivingDevice) {
  // d1 sends one gradient of round 5 without a sender (what d0 sees when
  // its node has no route to d1's): d0 cannot take it, and waiting would
  // stall the round on every replay. d0 reports it and is lost; its layers
  // go on from the replica, every round once.
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {}, {{"d1", {"--anonymous-at", "gradient:5"}}});
  const Outcome run = train(nodes);
  expect_continuity(run);
  ASSERT_EQ(run.failures.size(), 1u);
  EXPECT_EQ(run.failures[0].kind, "device-lost");
  EXPECT_EQ(run.failures[0].devices, std::vector<std::string>{"d0"});
  EXPECT_FALSE(uses(run.final_plan, "d0"));
}

TEST(PipelineReplay, AStageThatFailsOnItsOwnIsRestartedInPlace) {
  // d2's stage throws in the all-reduce of round 5 while its node lives
  // on: d2's node restarts that actor, which loads its group's committed
  // state; d0, d1 and d3 keep their actors (rolled back by the abort) and
  // drop what they were sent for the aborted rounds. Every round once, the
  // same losses, the same plan.
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {}, {{"d2", {"--fail-at", "allreduce:5"}}});
  const Outcome run = train(nodes);
  expect_continuity(run);
  ASSERT_EQ(run.failures.size(), 1u);
  const FailureRecord& f = run.failures[0];
  EXPECT_EQ(f.kind, "stage-failed");
  EXPECT_EQ(f.round, 5u);
  EXPECT_EQ(f.devices, std::vector<std::string>{"d2"});
  EXPECT_EQ(f.replan, "in-place");
  EXPECT_EQ(f.layers_moved, 2) << "only the failed stage's layers are loaded again";
  EXPECT_EQ(planner::plan_to_json(run.final_plan)["stages"], planner::plan_to_json(three_stage_plan())["stages"]);
}

TEST(PipelineReplay, AFailedStageAloneOnItsDeviceRestartsFromTheStateItsNodeKeeps) {
  // d3 runs the last stage alone; its actor throws in the forward of round
  // 3. No other member holds the stage: the new actor loads the committed
  // state d3's node keeps (no state travels), and training goes on
  // unchanged.
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {}, {{"d3", {"--fail-at", "forward:3"}}});
  const Outcome run = train(nodes);
  expect_continuity(run);
  ASSERT_EQ(run.failures.size(), 1u);
  EXPECT_EQ(run.failures[0].kind, "stage-failed");
  EXPECT_EQ(run.failures[0].replan, "in-place");
  EXPECT_EQ(run.failures[0].layers_moved, 0);
  EXPECT_EQ(run.failures[0].bytes_moved, 0);
  EXPECT_TRUE(uses(run.final_plan, "d3"));
}

TEST(PipelineReplay, ANodeThatGivesUpRestartingItsStageLosesItsDevice) {
  // d2's node may restart no stage actor (--stage-restarts 0): when its
  // stage throws in round 5 the node gives up at once, the coordinator
  // hears so, and the job supervisor treats d2 as lost: its group goes on
  // without it, every round once.
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {},
                   {{"d2", {"--fail-at", "allreduce:5", "--stage-restarts", "0"}}});
  const Outcome run = train(nodes);
  expect_continuity(run);
  ASSERT_GE(run.failures.size(), 2u);
  // The restart in place is cut short by the node's refusal...
  const FailureRecord& gave_up = run.failures.front();
  EXPECT_NE(gave_up.interrupted_by.find("its node gave up restarting it"), std::string::npos) << gave_up.interrupted_by;
  EXPECT_EQ(std::make_tuple(gave_up.kind, gave_up.round, gave_up.replan),
            std::make_tuple(std::string("stage-failed"), uint64_t{5}, std::string("interrupted")));
  // ...and the recovery goes on without the device.
  EXPECT_EQ(run.failures[1].devices, std::vector<std::string>{"d2"});
  EXPECT_NE(run.failures[1].replan, "in-place");
  EXPECT_FALSE(uses(run.final_plan, "d2"));
}

TEST(PipelineReplay, ADeviceLostWhileACheckpointFetchesStatesIsRecovered) {
  // Checkpoints fall due every 3 rounds; d3 (the last stage, alone) dies
  // when the first checkpoint from round 4 on asks for its state. The rounds
  // up to it stay committed, the checkpoint is taken at the next commit.
  const test_support::TempDir dir("asteroid-checkpoint-fault");
  const std::string checkpoint = dir.file("checkpoint.bin");
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {}, {{"d3", {"--crash-at", "state:4"}}});
  const Outcome run = train(nodes, {}, checkpoint);
  expect_continuity(run);
  ASSERT_EQ(run.failures.size(), 1u);
  EXPECT_EQ(run.failures[0].devices, std::vector<std::string>{"d3"});
  EXPECT_FALSE(uses(run.final_plan, "d3"));
  const Checkpoint written = read_checkpoint(checkpoint);
  EXPECT_GE(written.job.at("round").get<uint64_t>(), 5u) << "no checkpoint was taken after the failure";
}

TEST(PipelineReplay, ADeviceLostAfterTheLastCommitLosesNothing) {
  // d3 dies when the job fetches the final weights: its stage's state of
  // the last round comes from its replica, and the model is the fault-free
  // one.
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {}, {{"d3", {"--crash-at", "state:9"}}});
  const Outcome run = train(nodes);
  expect_continuity(run);
  EXPECT_DOUBLE_EQ(run.accuracy, fault_free().accuracy);
  ASSERT_EQ(run.failures.size(), 1u);
  EXPECT_EQ(run.failures[0].replan, "final-state");
  EXPECT_EQ(run.failures[0].devices, std::vector<std::string>{"d3"});
}

TEST(PipelineReplay, AStageLostBeforeItsNewHolderGotAReplicaIsRecovered) {
  // The job switches to a plan whose single-device stages hold each
  // other's replicas; d4 dies before the new plan has run a round, so no
  // replica of its stage was ever shipped under it. Deploying gave d0 the
  // state d4's stage started from, and the job recovers from it.
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"});
  actors::AsteroidConfig config;
  caf::actor_system system(config);
  actors::JobSpec spec;
  spec.cluster = nodes.cluster();
  spec.plan = three_stage_plan();
  spec.model = kModel;
  spec.job_id = "seeded-replica";
  SupervisionOptions options;
  options.profile = uniform_profile(layer_infos(), spec.cluster);
  options.reconnect_every = std::chrono::milliseconds(50);
  options.heartbeat.deadline = std::chrono::milliseconds(2000);
  JobSupervisor job(system, spec, options);
  job.start();
  Plan second = three_stage_plan();
  second.stages = {Stage{0, 3, {{"d0", 8}}}, Stage{3, 6, {{"d4", 8}}}};
  ASSERT_EQ(planner::replica_holder(second, 1).value_or(""), "d0");
  std::vector<uint64_t> rounds;
  bool switched = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
  while (job.committed_rounds() < kRounds) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "training did not finish in time";
    if (!switched && job.next_round() == 4) {
      for (const auto& r : job.switch_plan(second)) rounds.push_back(r.round);
      switched = true;
      nodes.process("d4").signal(SIGKILL);
    }
    const auto step = job.next_round() < kRounds ? job.run_round() : job.flush();
    for (const auto& r : step) rounds.push_back(r.round);
  }
  std::vector<uint64_t> expected(kRounds);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(rounds, expected);
  ASSERT_EQ(job.failures().size(), 1u);
  EXPECT_EQ(job.failures()[0].devices, std::vector<std::string>{"d4"});
  EXPECT_FALSE(uses(job.plan(), "d4"));
}

TEST(PipelineReplay, HeavyReplanAlsoRecovers) {
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {}, {{"d3", {"--crash-at", "backward:5"}}});
  const Outcome run = train(nodes, {}, "", Recovery::heavy);
  expect_continuity(run);
  ASSERT_EQ(run.failures.size(), 1u);
  EXPECT_EQ(run.failures[0].replan, "heavy");
  EXPECT_FALSE(uses(run.final_plan, "d3"));
}

TEST(StopAndRestart, GoesBackToTheLastCheckpoint) {
  // The baseline: every stage starts anew from the last checkpoint and
  // the rounds after it run again. Checkpoints fall due every 3 committed
  // rounds, and a round commits once its replicas landed (paced): which
  // round the last checkpoint before the crash in round 7 holds depends on
  // how far commits lag (round 5 or 6 on a quiet machine, 2 on a busy one),
  // so it is read from the job's checkpoint events.
  const test_support::TempDir dir("asteroid-restart");
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"}, {}, {{"d1", {"--crash-at", "backward:7"}}});
  const Outcome run = train(nodes, {}, dir.file("checkpoint.bin"), Recovery::restart);
  ASSERT_EQ(run.failures.size(), 1u);
  EXPECT_EQ(run.failures[0].replan, "restart");
  std::optional<uint64_t> checkpointed;
  for (const auto& e : run.events) {
    if (e.kind == "failure") break;
    unsigned long long round = 0;
    if (e.kind == "checkpoint" && std::sscanf(e.text.c_str(), "checkpoint of round %llu", &round) == 1)
      checkpointed = round;
  }
  ASSERT_TRUE(checkpointed) << "no checkpoint before the crash in round 7";
  const uint64_t from = run.failures[0].resumed_from;
  EXPECT_EQ(from, *checkpointed + 1) << "the restart must start after the last checkpoint";
  // Rounds 0 .. (the last committed before the crash), then `from` .. 9.
  std::vector<uint64_t> rounds;
  for (const auto& r : run.committed) rounds.push_back(r.round);
  ASSERT_GE(rounds.size() + from, 10u);
  const uint64_t before = rounds.size() + from - 10;  // rounds committed before the crash
  EXPECT_GE(before, from) << "the checkpoint must be of a committed round";
  std::vector<uint64_t> expected;
  for (uint64_t r = 0; r < before; ++r) expected.push_back(r);
  for (uint64_t r = from; r < 10; ++r) expected.push_back(r);
  EXPECT_EQ(rounds, expected);
  const Outcome& reference = fault_free();
  EXPECT_NEAR(run.committed.back().loss, reference.committed.back().loss,
              1e-3 * std::abs(reference.committed.back().loss));
  EXPECT_NEAR(run.accuracy, reference.accuracy, 0.02);
}

TEST(PipelineReplay, NoReplicaLeftStopsWithAClearMessage) {
  // The last stage's device and the holder of its replica (d0, the first
  // stage) die together: nothing holds the last stage's state any more.
  LocalNodes nodes({"d0", "d1", "d2", "d3", "d4"});
  try {
    train(nodes, [&](uint64_t round) {
      if (round == 4) {
        nodes.process("d3").signal(SIGKILL);
        nodes.process("d0").signal(SIGKILL);
      }
    });
    FAIL() << "training went on without the state of a stage";
  } catch (const actors::JobError& e) {
    EXPECT_NE(std::string(e.what()).find("lost"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace asteroid::supervision
