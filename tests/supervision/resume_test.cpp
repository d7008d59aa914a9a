// The coordinator itself dies (SIGKILL) in the middle of a job; `asteroid
// train --resume` continues from its last checkpoint on the nodes that are
// still up, and the job ends as if nothing happened: every round committed
// once, in order, with the losses of an uninterrupted run.
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>

#include <filesystem>
#include <functional>
#include <limits>
#include <algorithm>
#include <fstream>
#include <thread>

#include "actors/ask.h"
#include "actors/connect.h"
#include "actors/system_config.h"
#include "planner/json_io.h"
#include "supervision/checkpoint.h"
#include "tests/support/local_nodes.h"
#include "tests/support/temp_dir.h"

namespace asteroid::supervision {
namespace {

namespace fs = std::filesystem;
using test_support::LocalNodes;

constexpr int kRounds = 12;

// A test's directory (removed when it ends) with its cluster and plan files.
struct Paths {
  test_support::TempDir scratch;
  fs::path dir, cluster, plan;

  Paths(const LocalNodes& nodes, const std::string& name)
      : scratch("asteroid-resume-" + name), dir(scratch.path()), cluster(dir / "cluster.json"), plan(dir / "plan.json") {
    planner::save_cluster(nodes.cluster(), cluster.string());
    planner::Plan p;
    p.strategy = "custom";
    p.batch = 32;
    p.microbatches = 4;
    p.microbatch_size = 8;
    p.stages = {{0, 2, {{"d0", 8}}}, {2, 4, {{"d1", 5}, {"d2", 3}}}, {4, 6, {{"d3", 8}}}};
    planner::save_plan(p, plan.string());
  }
};

std::vector<std::string> train_args(const Paths& p, const std::string& metrics, int checkpoint_every = 1,
                                    int rounds = kRounds) {
  static int runs = 0;
  const std::string out = (p.dir / ("run-" + std::to_string(++runs))).string();  // the run folder
  return {ASTEROID_BIN, "train", "--cluster", p.cluster.string(), "--out", out, "--no-plots",
          "--rounds", std::to_string(rounds),
          "--batch", "32", "--seed", "7", "--model", "fmnist-cnn", "--metrics", metrics, "--progress", "off",
          "--test-samples", "500", "--checkpoint-every", std::to_string(checkpoint_every), "--checkpoint", (p.dir / "checkpoint.bin").string(),
          // Plan switches follow measured speeds, which differ from run to
          // run, and change the order of float sums: runs compared round
          // by round keep their plan.
          "--adapt", "off"};
}

// (round, loss) of every round line, in file order.
std::vector<std::pair<int64_t, double>> rounds_in(const fs::path& metrics) {
  std::vector<std::pair<int64_t, double>> out;
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("round")) out.push_back({j["round"].get<int64_t>(), j["loss"].get<double>()});
  }
  return out;
}

int run_to_end(std::vector<std::string> argv) {
  testbed::SpawnOptions options;
  options.argv = std::move(argv);
  options.die_with_parent = true;
  auto process = testbed::Subprocess::spawn(options);
  auto status = process.wait_for(std::chrono::minutes(3));
  if (!status) process.stop();
  return status.value_or(-1);
}

using Rounds = std::vector<std::pair<int64_t, double>>;

// The lowest, over the nodes, of the newest round each committed of `job`
// (-1 when one has committed none or does not answer).
int64_t oldest_commit_on_nodes(caf::actor_system& system, const planner::Cluster& cluster, const std::string& job) {
  actors::ScopedMailbox self(system);
  int64_t oldest = std::numeric_limits<int64_t>::max();
  for (const auto& d : cluster.devices) {
    std::string failure;
    auto node = actors::connect_node(self, d, std::chrono::seconds(5),
                                     failure);
    if (!node) return -1;
    auto answer = actors::ask(self, node->actor, messages::KeptRequest{job}, std::chrono::seconds(5), failure);
    auto* list = answer ? std::get_if<messages::KeptList>(&*answer) : nullptr;
    if (!list) return -1;
    int64_t newest = -1;
    for (const auto& e : list->entries)
      if (e.committed) newest = std::max(newest, static_cast<int64_t>(e.round));
    oldest = std::min(oldest, newest);
  }
  return oldest;
}

// Runs the job of `rounds` rounds uninterrupted for reference (its rounds
// are returned), then the same job, checkpointing every `checkpoint_every`
// rounds, with its coordinator killed once `logged` rounds are in `metrics`
// and `ready()` holds.
Rounds reference_and_killed_job(const Paths& p, const fs::path& metrics, int checkpoint_every, size_t logged,
                                int rounds = kRounds, const std::function<bool()>& ready = [] { return true; }) {
  auto reference_args = train_args(p, (p.dir / "reference.jsonl").string(), checkpoint_every, rounds);
  reference_args.insert(reference_args.end(), {"--plan", p.plan.string(), "--job-id", "reference"});
  EXPECT_EQ(run_to_end(reference_args), 0);
  const auto reference = rounds_in(p.dir / "reference.jsonl");
  EXPECT_EQ(reference.size(), static_cast<size_t>(rounds));

  auto args = train_args(p, metrics.string(), checkpoint_every, rounds);
  args.insert(args.end(), {"--plan", p.plan.string(), "--job-id", "killed"});
  testbed::SpawnOptions options;
  options.argv = args;
  options.die_with_parent = true;
  auto coordinator = testbed::Subprocess::spawn(options);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  while (rounds_in(metrics).size() < logged || !ready()) {
    if (!coordinator.running()) throw std::runtime_error("the coordinator ended before it could be killed");
    if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("no progress");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a file the coordinator writes
  }
  coordinator.signal(SIGKILL);
  coordinator.wait_for(std::chrono::seconds(10));
  EXPECT_LT(rounds_in(metrics).size(), static_cast<size_t>(rounds)) << "killed too late to test anything";
  return reference;
}

void expect_same_rounds(const Rounds& resumed, const Rounds& reference) {
  ASSERT_EQ(resumed.size(), reference.size());
  for (size_t r = 0; r < resumed.size(); ++r) {
    EXPECT_EQ(resumed[r].first, static_cast<int64_t>(r)) << "rounds must be logged once each, in order";
    EXPECT_NEAR(resumed[r].second, reference[r].second, 1e-4 * std::abs(reference[r].second)) << "round " << r;
  }
}

// The metrics' lines of one event kind.
std::vector<nlohmann::json> events_in(const fs::path& metrics, const std::string& kind) {
  std::vector<nlohmann::json> out;
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.value("event", "") == kind) out.push_back(j);
  }
  return out;
}

TEST(CoordinatorRestart, ResumesFromTheLastCheckpoint) {
  LocalNodes nodes({"d0", "d1", "d2", "d3"});
  const Paths p(nodes, "killed");
  const fs::path metrics = p.dir / "metrics.jsonl";
  const Rounds reference = reference_and_killed_job(p, metrics, 1, 5);

  // The nodes survived the coordinator and take the resumed job.
  for (const char* id : {"d0", "d1", "d2", "d3"}) EXPECT_TRUE(nodes.process(id).running()) << id;
  auto resume = train_args(p, metrics.string());
  resume.insert(resume.end(), {"--resume", (p.dir / "checkpoint.bin").string()});
  ASSERT_EQ(run_to_end(resume), 0);
  expect_same_rounds(rounds_in(metrics), reference);
}

TEST(CoordinatorRestart, ResumesFromTheNodesStatesWhenNewerThanTheCheckpoint) {
  // 40 rounds, checkpoints after rounds 9, 19, 29 and 39: killed after
  // round 11 (rounds take tens of ms here: mostly before round 19), the
  // coordinator leaves on the nodes committed states newer than its
  // checkpoint, and the resume continues from them, not from round 10.
  constexpr int kLong = 40;
  LocalNodes nodes({"d0", "d1", "d2", "d3"});
  const Paths p(nodes, "nodes");
  const fs::path metrics = p.dir / "metrics.jsonl";
  // Killed once every node has committed round 11 or later: a round the
  // coordinator logged may not have had its commit delivered yet, and a
  // group keeps no replica, so only delivered commits count.
  actors::AsteroidConfig config;
  caf::actor_system system(config);
  const auto everyone_committed_11 = [&] { return oldest_commit_on_nodes(system, nodes.cluster(), "killed") >= 11; };
  const Rounds reference = reference_and_killed_job(p, metrics, 10, 12, kLong, everyone_committed_11);
  const Rounds before = rounds_in(metrics);
  const size_t logged = before.size();
  const int64_t checkpoint_round = read_checkpoint((p.dir / "checkpoint.bin").string()).job.at("round").get<int64_t>();
  auto resume = train_args(p, metrics.string(), 10, kLong);
  resume.insert(resume.end(), {"--resume", (p.dir / "checkpoint.bin").string()});
  ASSERT_EQ(run_to_end(resume), 0);
  const auto resumes = events_in(metrics, "resume");
  ASSERT_EQ(resumes.size(), 1u) << "the resume did not use the nodes' states";
  const int64_t from = resumes[0]["from_round"].get<int64_t>();
  EXPECT_GT(from, checkpoint_round + 1) << resumes[0].dump();
  EXPECT_LE(from, static_cast<int64_t>(logged)) << "resumed past the last logged round";
  expect_same_rounds(rounds_in(metrics), reference);
}

TEST(CoordinatorRestart, ResumesOnTheNodesThatAreUp) {
  // The job stops after half its rounds; then the only device of its last
  // stage dies. Resuming re-plans over the three others, starts from the
  // checkpoint's weights and ends with the losses of an uninterrupted run
  // (up to the order of floating-point sums, which the new plan changes).
  LocalNodes nodes({"d0", "d1", "d2", "d3"});
  const Paths p(nodes, "survivors");
  auto reference_args = train_args(p, (p.dir / "reference.jsonl").string());
  reference_args.insert(reference_args.end(), {"--plan", p.plan.string(), "--job-id", "reference"});
  ASSERT_EQ(run_to_end(reference_args), 0);
  const auto reference = rounds_in(p.dir / "reference.jsonl");
  ASSERT_EQ(reference.size(), static_cast<size_t>(kRounds));

  const fs::path metrics = p.dir / "metrics.jsonl";
  auto first = train_args(p, metrics.string());
  *std::next(std::find(first.begin(), first.end(), "--rounds")) = std::to_string(kRounds / 2);
  first.insert(first.end(), {"--plan", p.plan.string(), "--job-id", "survivors"});
  ASSERT_EQ(run_to_end(first), 0);
  nodes.process("d3").signal(SIGKILL);
  ASSERT_TRUE(nodes.process("d3").wait_for(std::chrono::seconds(10)).has_value());

  auto resume = train_args(p, metrics.string());
  resume.insert(resume.end(), {"--resume", (p.dir / "checkpoint.bin").string()});
  ASSERT_EQ(run_to_end(resume), 0);
  const auto resumed = rounds_in(metrics);
  ASSERT_EQ(resumed.size(), static_cast<size_t>(kRounds));
  for (size_t r = 0; r < resumed.size(); ++r) {
    EXPECT_EQ(resumed[r].first, static_cast<int64_t>(r)) << "rounds must be logged once each, in order";
    EXPECT_NEAR(resumed[r].second, reference[r].second, 1e-3 * std::abs(reference[r].second)) << "round " << r;
  }
  // The re-plan is logged, without d3; the first job finished and released
  // its states, so the resume started from the checkpoint.
  const auto replans = events_in(metrics, "replan");
  ASSERT_FALSE(replans.empty());
  for (const auto& j : replans) EXPECT_EQ(j["plan"].dump().find("\"d3\""), std::string::npos) << j.dump();
  EXPECT_TRUE(events_in(metrics, "resume").empty());
}

TEST(CoordinatorRestart, AMissingOrCorruptCheckpointIsNamed) {
  LocalNodes nodes({"d0", "d1", "d2", "d3"});
  const Paths p(nodes, "corrupt");
  const fs::path bad = p.dir / "checkpoint.bin";
  std::ofstream(bad) << "ASTCKPT1 but nothing else";
  auto args = train_args(p, (p.dir / "m.jsonl").string());
  args.insert(args.end(), {"--resume", bad.string()});
  testbed::SpawnOptions options;
  options.argv = args;
  options.capture_stdout = true;
  options.capture_stderr = true;
  auto process = testbed::Subprocess::spawn(options);
  const auto status = process.wait_for(std::chrono::seconds(60));
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(*status, 0);
  const std::string err = process.read_all_stderr(testbed::Clock::now() + std::chrono::seconds(5));
  EXPECT_NE(err.find(bad.string()), std::string::npos) << err;
}

}  // namespace
}  // namespace asteroid::supervision
