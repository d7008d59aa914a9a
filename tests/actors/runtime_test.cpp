// The runtime across real node processes on 127.0.0.1: hybrid pipeline
// training must equal single-device training (same losses, same weights),
// every stage must follow the canonical 1F1B order, and bad jobs must fail
// with the culprit named while the nodes go on.
#include <ATen/ATen.h>
#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "actors/ask.h"
#include "actors/atoms.h"
#include "actors/connect.h"
#include "actors/coordinator.h"
#include "apps/testbed/process.h"
#include "planner/schedule.h"
#include "actors/system_config.h"
#include "compute/dataset.h"
#include "compute/evaluate.h"
#include "compute/model_zoo.h"
#include "compute/stage_model.h"
#include "compute/torchscript_model.h"
#include "messages/tensor_codec.h"
#include "tests/support/custom_model_files.h"
#include "tests/support/local_nodes.h"
#include "tests/support/temp_dir.h"

namespace asteroid::actors {
namespace {

using planner::canonical_1f1b;
using planner::Op;
using planner::Plan;
using planner::Stage;

constexpr int kBatch = 32;
constexpr uint64_t kSeed = 7;

Plan make_plan(int microbatches, std::vector<Stage> stages) {
  Plan plan;
  plan.strategy = "custom";
  plan.batch = kBatch;
  plan.microbatches = microbatches;
  plan.microbatch_size = kBatch / microbatches;
  plan.stages = std::move(stages);
  return plan;
}

struct Reference {
  std::vector<double> losses;
  at::Tensor weights;
};

// Single-device training of the same model, data and seed, in this process.
Reference train_single(const std::string& model, int rounds) {
  compute::OptimizerConfig optimizer;  // the default, as the coordinator's
  compute::StageModel whole(model, 0, compute::layer_count(model), kSeed, optimizer);
  auto data = compute::open_dataset(model, compute::Split::train);
  Reference ref;
  for (int r = 0; r < rounds; ++r) {
    auto batch = data->get(compute::round_indices(data->size(), kBatch, kSeed, r));
    auto result = whole.forward_backward_loss(r, batch.inputs, batch.labels, kBatch);
    whole.step();
    ref.losses.push_back(result.loss_sum / kBatch);
  }
  ref.weights = whole.flat_weights();
  return ref;
}

struct Distributed {
  std::vector<RoundReport> rounds;
  at::Tensor weights;
  std::vector<messages::TraceEvent> trace;
  std::vector<messages::StageState> member_states;  // every member's, stage by stage
};

// The job of `model` with `plan` on `cluster`, everything else default.
JobSpec job_spec(const planner::Cluster& cluster, const Plan& plan, const std::string& model = "fmnist-cnn") {
  JobSpec spec;
  spec.cluster = cluster;
  spec.plan = plan;
  spec.model = model;
  return spec;
}

Distributed train_distributed(const planner::Cluster& cluster, const Plan& plan, const std::string& model, int rounds,
                              bool trace = false) {
  AsteroidConfig config(coordinator_options(cluster));
  caf::actor_system system(config);
  JobSpec spec = job_spec(cluster, plan, model);
  spec.seed = kSeed;
  spec.data_seed = kSeed;
  spec.trace = trace;
  Coordinator coordinator(system, spec);
  coordinator.deploy();
  Distributed out;
  while (coordinator.next_round() < static_cast<uint64_t>(rounds)) {
    for (const auto& report : coordinator.run_round()) out.rounds.push_back(report);
  }
  for (const auto& report : coordinator.flush()) out.rounds.push_back(report);
  std::vector<at::Tensor> parts;
  for (const auto& state : coordinator.fetch_states()) parts.push_back(messages::to_tensor(state.weights).clone());
  out.weights = at::cat(parts);
  out.trace = coordinator.trace();
  out.member_states = coordinator.fetch_member_states();
  return out;
}

double accuracy_of(const std::string& model, const at::Tensor& weights, int64_t samples) {
  static const auto test = compute::open_dataset(model, compute::Split::test);
  return compute::evaluate_weights(model, weights, *test, 500, samples).accuracy;
}

void expect_equivalent(const Reference& ref, const Distributed& dist) {
  ASSERT_EQ(ref.losses.size(), dist.rounds.size());
  for (size_t r = 0; r < ref.losses.size(); ++r) {
    EXPECT_EQ(dist.rounds[r].round, r);
    EXPECT_EQ(dist.rounds[r].samples, static_cast<uint32_t>(kBatch));
    EXPECT_LT(std::abs(dist.rounds[r].loss - ref.losses[r]) / std::abs(ref.losses[r]), 1e-4)
        << "round " << r << ": distributed loss " << dist.rounds[r].loss << ", single " << ref.losses[r];
  }
  ASSERT_EQ(dist.weights.numel(), ref.weights.numel());
  const double max_diff = (dist.weights - ref.weights).abs().max().item<double>();
  EXPECT_LT(max_diff, 1e-5) << "final weights differ by up to " << max_diff;
  // The run must have trained at all, or equality would prove nothing.
  EXPECT_LT(ref.losses.back(), ref.losses.front());
}

class Runtime : public ::testing::Test {
 protected:
  test_support::LocalNodes nodes{{"d0", "d1", "d2", "d3"}};
};

TEST_F(Runtime, HybridPipelineWithAGroupEqualsSingleDevice) {
  // fmnist-cnn: 3 stages, the middle one a group of two devices that split
  // each micro-batch 5/3.
  const int layers = compute::layer_count("fmnist-cnn");
  ASSERT_GE(layers, 4);
  const Plan plan = make_plan(4, {{0, 1, {{"d0", 8}}}, {1, 3, {{"d1", 5}, {"d2", 3}}}, {3, layers, {{"d3", 8}}}});
  const auto ref = train_single("fmnist-cnn", 5);
  expect_equivalent(ref, train_distributed(nodes.cluster(), plan, "fmnist-cnn", 5));
}

TEST(RuntimeOverTls, AHybridPipelineOverMutualTlsEqualsSingleDevice) {
  // The same job as above with every connection through actors/tls.h: the
  // wire's content is unchanged, so are the losses and the weights.
  test_support::TempDir dir("asteroid-tls-runtime");
  const std::string tls = dir.file("tls");
  ASSERT_EQ(testbed::run_command({ASTEROID_BIN, "certs", "init", "--dir", tls}, testbed::Millis(30000)).status, 0);
  for (const char* id : {"d0", "d1", "d2", "d3"})
    ASSERT_EQ(testbed::run_command({ASTEROID_BIN, "certs", "issue", "--dir", tls, "--id", id}, testbed::Millis(30000)).status,
              0);
  test_support::LocalNodes nodes({"d0", "d1", "d2", "d3"}, {"--tls-dir", tls});
  planner::Cluster cluster = nodes.cluster();
  cluster.tls_dir = tls;
  const int layers = compute::layer_count("fmnist-cnn");
  const Plan plan = make_plan(4, {{0, 1, {{"d0", 8}}}, {1, 3, {{"d1", 5}, {"d2", 3}}}, {3, layers, {{"d3", 8}}}});
  expect_equivalent(train_single("fmnist-cnn", 5), train_distributed(cluster, plan, "fmnist-cnn", 5));
}

TEST_F(Runtime, ATorchScriptChainTrainsOnNodesThatLackItAsOnOneDevice) {
  // docs/custom-models.md's own export: a 10-child nn.Sequential and
  // Fashion-MNIST samples saved with torch.save. Only this process reads the
  // model file: each node receives it at its connection.
  const auto& files = test_support::doc_model_files();
  const std::string model =
      compute::register_scripted_file(files.model, compute::describe_tensor_data(files.train, files.test)).spec.name;
  const Plan plan = make_plan(4, {{0, 3, {{"d0", 8}}}, {3, 7, {{"d1", 5}, {"d2", 3}}}, {7, 10, {{"d3", 8}}}});
  const auto ref = train_single(model, 12);  // from the file's weights: a few rounds more than the zoo's need
  expect_equivalent(ref, train_distributed(nodes.cluster(), plan, model, 12));
  AsteroidConfig config;
  caf::actor_system system(config);
  ScopedMailbox self{system};
  std::string failure;
  const auto& d1 = nodes.cluster().devices[1];
  const auto node = connect_node(self, d1, std::chrono::seconds(5), failure);
  ASSERT_TRUE(node) << failure;
  const auto info = ask(self, node->actor, messages::Hello{}, std::chrono::seconds(5), failure);
  ASSERT_TRUE(info) << failure;
  const auto& models = std::get<messages::NodeInfo>(*info).models;
  EXPECT_NE(std::find(models.begin(), models.end(), model), models.end()) << "node d1 lists the model it received";
}

TEST_F(Runtime, AnswersAStatusRequestWhileRoundsRun) {
  const int layers = compute::layer_count("fmnist-cnn");
  const Plan plan = make_plan(4, {{0, 2, {{"d0", 8}}}, {2, layers, {{"d1", 8}}}});
  AsteroidConfig config;
  caf::actor_system system(config);
  Coordinator coordinator(system, job_spec(nodes.cluster(), plan));
  coordinator.deploy();
  std::atomic<bool> answered{false};
  std::string reply, failure;
  std::thread asker([&] {
    caf::scoped_actor self{system};
    self->request(coordinator.inbox(), std::chrono::seconds(120), status_atom::value)
        .receive([&](const std::string& s) { reply = s; }, [&](caf::error& e) { failure = system.render(e); });
    answered = true;
  });
  // The coordinator receives only inside its rounds: the answer comes
  // during one of them.
  uint64_t rounds_run = 0;
  while (!answered && rounds_run < 100) {
    coordinator.run_round();
    ++rounds_run;
  }
  asker.join();
  ASSERT_TRUE(failure.empty()) << failure;
  const auto status = nlohmann::json::parse(reply);
  EXPECT_LT(status["next_round"].get<uint64_t>(), rounds_run) << reply;
  EXPECT_EQ(status["last_committed"].is_null(), status["last_loss"].is_null()) << reply;
  if (!status["last_committed"].is_null()) {
    EXPECT_LT(status["last_committed"].get<uint64_t>(), status["next_round"].get<uint64_t>()) << reply;
  }
  EXPECT_EQ(status["plan"]["stages"].size(), 2u) << reply;
  EXPECT_EQ(status["devices"]["d0"], "in use");
  EXPECT_EQ(status["devices"]["d1"], "in use");
  EXPECT_EQ(status["devices"]["d2"], "idle");
  EXPECT_EQ(status["devices"]["d3"], "idle");
  // The same as asking the object.
  EXPECT_EQ(nlohmann::json::parse(coordinator.status())["plan"], status["plan"]);
}

TEST_F(Runtime, GroupMembersHoldBitIdenticalStatesAfterEveryRound) {
  const int layers = compute::layer_count("fmnist-cnn");
  const Plan plan = make_plan(2, {{0, 2, {{"d0", 7}, {"d1", 9}}}, {2, layers, {{"d2", 5}, {"d3", 11}}}});
  AsteroidConfig config;
  caf::actor_system system(config);
  JobSpec spec = job_spec(nodes.cluster(), plan);
  spec.optimizer.kind = messages::OptimizerKind::adam;
  spec.optimizer.lr = 1e-3;
  Coordinator coordinator(system, spec);
  coordinator.deploy();
  for (int r = 0; r < 3; ++r) {
    coordinator.run_round();
    coordinator.flush();
    const auto states = coordinator.fetch_member_states();
    ASSERT_EQ(states.size(), 4u);
    for (size_t stage = 0; stage < 2; ++stage) {
      const auto& a = states[2 * stage];
      const auto& b = states[2 * stage + 1];
      EXPECT_EQ(a.round, static_cast<uint64_t>(r));
      ASSERT_EQ(a.weights.bytes, b.weights.bytes);
      EXPECT_EQ(std::memcmp(a.weights.data, b.weights.data, a.weights.bytes), 0)
          << "stage " << stage << " members differ after round " << r;
      ASSERT_EQ(a.optimizer_state.bytes, b.optimizer_state.bytes);
      EXPECT_GT(a.optimizer_state.bytes, 0u);
      EXPECT_EQ(std::memcmp(a.optimizer_state.data, b.optimizer_state.data, a.optimizer_state.bytes), 0);
      EXPECT_EQ(a.optimizer_steps, static_cast<uint64_t>(r + 1));
    }
  }
}

TEST_F(Runtime, PureDataParallelEqualsSingleDevice) {
  const int layers = compute::layer_count("fmnist-cnn");
  const Plan plan = make_plan(2, {{0, layers, {{"d0", 6}, {"d1", 4}, {"d2", 6}}}});
  expect_equivalent(train_single("fmnist-cnn", 5), train_distributed(nodes.cluster(), plan, "fmnist-cnn", 5));
}

TEST_F(Runtime, OneDevicePerStageEqualsSingleDevice) {
  const int layers = compute::layer_count("fmnist-cnn");
  const Plan plan = make_plan(4, {{0, 1, {{"d0", 8}}}, {1, 2, {{"d1", 8}}}, {2, 3, {{"d2", 8}}},
                                  {3, layers, {{"d3", 8}}}});
  expect_equivalent(train_single("fmnist-cnn", 5), train_distributed(nodes.cluster(), plan, "fmnist-cnn", 5));
}

// A compressed wire: lossy codecs on both boundaries (activations forward,
// gradients back) and on a group's all-reduce (with error feedback).
TEST_F(Runtime, CompressedWireIsDeterministicCloseToExactAndKeepsGroupsIdentical) {
  const int layers = compute::layer_count("fmnist-cnn");
  Plan plan = make_plan(2, {{0, 2, {{"d0", 7}, {"d1", 9}}}, {2, 4, {{"d2", 16}}}, {4, layers, {{"d3", 16}}}});
  plan.stages[0].to_next = wire_codec::Codec::int4;
  plan.stages[0].allreduce = wire_codec::Codec::int8;
  plan.stages[1].to_next = wire_codec::Codec::bf16;
  constexpr int kRounds = 6;
  const auto first = train_distributed(nodes.cluster(), plan, "fmnist-cnn", kRounds);
  const auto again = train_distributed(nodes.cluster(), plan, "fmnist-cnn", kRounds);
  const auto exact = train_single("fmnist-cnn", kRounds);
  ASSERT_EQ(first.rounds.size(), static_cast<size_t>(kRounds));
  ASSERT_EQ(again.rounds.size(), static_cast<size_t>(kRounds));
  bool any_different_from_exact = false;
  for (int r = 0; r < kRounds; ++r) {
    EXPECT_EQ(first.rounds[r].loss, again.rounds[r].loss) << "round " << r << ": compression is not deterministic";
    EXPECT_NEAR(first.rounds[r].loss, exact.losses[r], 0.05 * exact.losses[r]) << "round " << r;
    any_different_from_exact |= std::abs(first.rounds[r].loss - exact.losses[r]) > 1e-4 * exact.losses[r];
  }
  EXPECT_TRUE(any_different_from_exact) << "the lossy wire changed nothing: was it used?";
  EXPECT_LT(first.rounds.back().loss, first.rounds.front().loss);
  // Stage 0's two members decode the same all-gathered bytes.
  ASSERT_GE(first.member_states.size(), 2u);
  const auto& a = first.member_states[0];
  const auto& b = first.member_states[1];
  ASSERT_EQ(a.weights.bytes, b.weights.bytes);
  EXPECT_EQ(std::memcmp(a.weights.data, b.weights.data, a.weights.bytes), 0) << "group members differ";
}

// 300 rounds with int8 on the boundary and the all-reduce reach the exact
// wire's test accuracy within one point.
TEST_F(Runtime, Int8WireTrainsAsWellAsTheExactWire) {
  const int layers = compute::layer_count("fmnist-cnn");
  Plan exact = make_plan(2, {{0, 3, {{"d0", 8}, {"d1", 8}}}, {3, layers, {{"d2", 16}}}});
  Plan int8 = exact;
  int8.stages[0].to_next = wire_codec::Codec::int8;
  int8.stages[0].allreduce = wire_codec::Codec::int8;
  constexpr int kRounds = 300;
  const auto e = train_distributed(nodes.cluster(), exact, "fmnist-cnn", kRounds);
  const auto q = train_distributed(nodes.cluster(), int8, "fmnist-cnn", kRounds);
  ASSERT_EQ(q.rounds.size(), static_cast<size_t>(kRounds));
  const double exact_accuracy = accuracy_of("fmnist-cnn", e.weights, 10000);
  const double int8_accuracy = accuracy_of("fmnist-cnn", q.weights, 10000);
  EXPECT_GT(exact_accuracy, 0.6) << "the exact run did not learn";
  EXPECT_NEAR(int8_accuracy, exact_accuracy, 0.01);
}

// The order of forwards and backwards each stage recorded, as "F0 F1 B0 ...".
std::map<std::pair<uint32_t, uint32_t>, std::string> recorded_orders(const std::vector<messages::TraceEvent>& trace,
                                                                      uint64_t round) {
  std::vector<messages::TraceEvent> ops;
  for (const auto& e : trace) {
    if (e.round == round && (e.kind == messages::TraceKind::forward || e.kind == messages::TraceKind::backward)) {
      ops.push_back(e);
    }
  }
  std::stable_sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.start_us < b.start_us; });
  std::map<std::pair<uint32_t, uint32_t>, std::string> orders;
  for (const auto& e : ops) {
    orders[{e.stage, e.member}] +=
        to_string(Op{e.kind == messages::TraceKind::forward ? Op::Kind::forward : Op::Kind::backward,
                     static_cast<int>(e.microbatch)}) +
        " ";
  }
  return orders;
}

TEST_F(Runtime, EveryStageFollowsTheCanonicalOneFOneBOrder) {
  const int layers = compute::layer_count("fmnist-cnn");
  struct Case {
    int microbatches;
    std::vector<Stage> stages;
  };
  const std::vector<Case> cases = {
      {4, {{0, 2, {{"d0", 8}}}, {2, layers, {{"d1", 8}}}}},
      {8, {{0, 1, {{"d0", 4}}}, {1, 2, {{"d1", 4}}}, {2, layers, {{"d2", 4}}}}},
      {2, {{0, 1, {{"d0", 16}}}, {1, 2, {{"d1", 16}}}, {2, 3, {{"d2", 16}}}, {3, layers, {{"d3", 16}}}}},
  };
  for (const Case& c : cases) {
    const Plan plan = make_plan(c.microbatches, c.stages);
    const auto run = train_distributed(nodes.cluster(), plan, "fmnist-cnn", 2, /*trace=*/true);
    const int stages = static_cast<int>(c.stages.size());
    for (uint64_t round = 0; round < 2; ++round) {
      const auto orders = recorded_orders(run.trace, round);
      for (int p = 0; p < stages; ++p) {
        std::string canonical;
        for (const Op& op : canonical_1f1b(p, stages, c.microbatches)) canonical += to_string(op) + " ";
        auto found = orders.find({static_cast<uint32_t>(p), 0u});
        ASSERT_NE(found, orders.end()) << "stage " << p << " recorded nothing";
        EXPECT_EQ(found->second, canonical) << "stage " << p << " of " << stages << ", M=" << c.microbatches
                                            << ", round " << round;
      }
    }
  }
}

TEST_F(Runtime, UnknownModelIsRefusedAndTheNodeAcceptsTheNextJob) {
  const Plan plan = make_plan(1, {{0, 3, {{"d0", 32}}}});
  try {
    train_distributed(nodes.cluster(), plan, "no-such-model", 1);
    FAIL() << "an unknown model was deployed";
  } catch (const JobError& e) {
    EXPECT_NE(std::string(e.what()).find("d0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no-such-model"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(nodes.process("d0").running());
  const int layers = compute::layer_count("fmnist-cnn");
  const auto run = train_distributed(nodes.cluster(), make_plan(1, {{0, layers, {{"d0", 32}}}}), "fmnist-cnn", 1);
  ASSERT_EQ(run.rounds.size(), 1u);
  EXPECT_GT(run.rounds[0].loss, 0);
}

TEST_F(Runtime, UnreachableDeviceFailsFastWithItsNameAndAddress) {
  planner::Cluster cluster = nodes.cluster();
  planner::Device ghost;
  ghost.id = "ghost";
  ghost.host = "127.0.0.1";
  ghost.port = nodes.cluster().devices[0].port;
  nodes.process("d0").stop();  // nothing listens there any more
  ghost.memory_mb = 4096;
  cluster.devices.push_back(ghost);
  const int layers = compute::layer_count("fmnist-cnn");
  const Plan plan = make_plan(1, {{0, layers, {{"d1", 16}, {"ghost", 16}}}});
  const auto started = std::chrono::steady_clock::now();
  try {
    train_distributed(cluster, plan, "fmnist-cnn", 1);
    FAIL() << "a job with an unreachable device ran";
  } catch (const JobError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("ghost"), std::string::npos) << what;
    EXPECT_NE(what.find("127.0.0.1:" + std::to_string(ghost.port)), std::string::npos) << what;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
}

TEST_F(Runtime, MemoryBudgetIsEnforcedAtAssignment) {
  test_support::LocalNodes small({"tiny"}, {"--memory-mb", "1"});
  AsteroidConfig config;
  caf::actor_system system(config);
  const int layers = compute::layer_count("fmnist-cnn");
  JobSpec spec = job_spec(small.cluster(), make_plan(1, {{0, layers, {{"tiny", 32}}}}));
  // No planner estimate: the node's own count of what the stage holds
  // (about 5 MiB of weights, gradients, momentum and their committed copy
  // for fmnist-cnn) exceeds 1 MiB.
  Coordinator coordinator(system, spec);
  try {
    coordinator.deploy();
    FAIL() << "a stage larger than the node's budget was deployed";
  } catch (const JobError& e) {
    EXPECT_NE(std::string(e.what()).find("out of memory"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("tiny"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace asteroid::actors
