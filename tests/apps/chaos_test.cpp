// The chaos campaign (apps/chaos.h): the draw, the plan and the verdict as
// pure functions, and an 8-fault campaign through the real binary
// (ASTEROID_BIN) on emulated env C, judged here again from its files.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "apps/chaos.h"
#include "apps/testbed/process.h"
#include "planner/cost_model.h"
#include "planner/json_io.h"
#include "testbed_test_util.h"

namespace asteroid::apps {
namespace {

namespace test = testbed::test;
namespace fs = std::filesystem;

int taken(const std::vector<Fault>& schedule) {
  int n = 0;
  for (const auto& f : schedule)
    n += f.action == "kill" || f.action == "freeze" || f.action == "cut-link" || (f.action == "slow" && f.factor != 1);
  return n;
}

TEST(ChaosDraw, DrawsExactlyTheFaultsAskedEachTakenDeviceComesBack) {
  for (uint64_t seed : {1u, 2u, 3u, 42u}) {
    for (int faults : {1, 8, 50}) {
      const auto schedule = draw_chaos_schedule({faults, seed, 10, 12});
      EXPECT_EQ(taken(schedule), faults) << "seed " << seed;
      // Every alias taken away is given back later, by the matching action.
      std::map<std::string, std::pair<std::string, uint64_t>> open;
      for (const auto& f : schedule) {
        ASSERT_TRUE(f.round.has_value());
        ASSERT_TRUE(f.alias()) << f.describe();
        const bool gives_back = f.action == "restart" || f.action == "thaw" || f.action == "heal-link" ||
                                (f.action == "slow" && f.factor == 1);
        if (!gives_back) {
          open[f.device] = {f.action, *f.round};
          continue;
        }
        auto it = open.find(f.device);
        ASSERT_NE(it, open.end()) << f.describe() << " gives back what was never taken";
        EXPECT_GT(*f.round, it->second.second);
        const std::map<std::string, std::string> back = {
            {"kill", "restart"}, {"freeze", "thaw"}, {"cut-link", "heal-link"}, {"slow", "slow"}};
        EXPECT_EQ(back.at(it->second.first), f.action);
        open.erase(it);
      }
      EXPECT_TRUE(open.empty()) << open.size() << " device(s) never come back";
      EXPECT_TRUE(std::is_sorted(schedule.begin(), schedule.end(),
                                 [](const Fault& a, const Fault& b) { return *a.round < *b.round; }));
      EXPECT_GT(chaos_rounds(schedule, 12), *schedule.back().round);
    }
  }
}

TEST(ChaosDraw, TheSameSeedDrawsTheSameScheduleAndAnotherSeedAnother) {
  const auto a = faults_to_json(draw_chaos_schedule({20, 7, 10, 12}));
  EXPECT_EQ(a, faults_to_json(draw_chaos_schedule({20, 7, 10, 12})));
  EXPECT_NE(a, faults_to_json(draw_chaos_schedule({20, 8, 10, 12})));
  // And faults.json reads it back as written.
  const auto read = faults_from_json(a.dump(), "faults.json");
  EXPECT_EQ(faults_to_json(read), a);
}

TEST(ChaosDraw, DrawsEveryKindOfEpisode) {
  const auto schedule = draw_chaos_schedule({60, 5, 10, 12});
  std::map<std::string, int> actions;
  int during = 0;
  for (const auto& f : schedule) {
    ++actions[f.action];
    during += f.on_recovery;
  }
  for (const char* a : {"kill", "restart", "freeze", "thaw", "slow", "cut-link", "heal-link"})
    EXPECT_GT(actions[a], 0) << a;
  EXPECT_GT(during, 0) << "no fault during a recovery";
  int to_hub = 0, between_peers = 0;
  for (const auto& f : schedule) {
    if (f.action != "cut-link") continue;
    to_hub += f.peer == "hub";
    between_peers += !f.peer.empty() && f.peer[0] == '?';
  }
  EXPECT_GT(to_hub, 0);
  EXPECT_GT(between_peers, 0) << "no partition between pipeline neighbours";
}

TEST(ChaosPlan, OneSingleDeviceStageAndTwoGroupsSplittingEveryMicroBatch) {
  const auto plan = chaos_plan({"a", "b", "c", "d", "e", "f"}, 6, 64, 4);
  ASSERT_EQ(plan.stages.size(), 3u);
  EXPECT_EQ(plan.stages[0].devices.size(), 1u);
  EXPECT_EQ(plan.stages[1].devices.size(), 2u);
  EXPECT_EQ(plan.stages[2].devices.size(), 3u);
  int begin = 0;
  for (const auto& stage : plan.stages) {
    EXPECT_EQ(stage.begin, begin);
    EXPECT_GT(stage.end, stage.begin);
    begin = stage.end;
    int samples = 0;
    for (const auto& d : stage.devices) samples += d.samples;
    EXPECT_EQ(samples, plan.microbatch_size);
  }
  EXPECT_EQ(begin, 6);
  EXPECT_THROW(chaos_plan({"a", "b"}, 6, 64, 4), std::invalid_argument);
  EXPECT_THROW(chaos_plan({"a", "b", "c"}, 6, 64, 5), std::invalid_argument);
}

TEST(PickSafeDevice, NeverTakesTheLastCopyOfAStage) {
  const auto plan = chaos_plan({"a", "b", "c", "d", "e", "f"}, 6, 64, 4);
  const std::vector<std::string> all = {"a", "b", "c", "d", "e", "f"};
  // Stage 0 is "a" alone; its replica lives on the next stage's first device.
  const auto holder = planner::replica_holder(plan, 0);
  ASSERT_TRUE(holder.has_value());
  for (uint64_t key = 0; key < 12; ++key) {
    const auto pick = pick_safe_device(plan, all, {"a"}, key);
    ASSERT_TRUE(pick.has_value());
    EXPECT_NE(*pick, *holder) << "with a down, its replica holder is its only copy";
  }
  // With b down, c is the middle group's last member.
  for (uint64_t key = 0; key < 12; ++key) EXPECT_NE(pick_safe_device(plan, all, {"b"}, key).value_or(""), "c");
  // Everything but one of each group down: nothing else may go.
  EXPECT_FALSE(pick_safe_device(plan, all, {"a", "c", "e", "f"}, 0).has_value());
}

TEST(PickSafeNeighbour, PicksAPipelineNeighbourWhoseLossIsSafe) {
  // a | b c | d e f: a's neighbours are b and c; c's are a, b, d, e, f.
  const auto plan = chaos_plan({"a", "b", "c", "d", "e", "f"}, 6, 64, 4);
  std::set<std::string> seen;
  for (uint64_t key = 0; key < 12; ++key) seen.insert(pick_safe_neighbour(plan, "a", {}, key).value_or(""));
  EXPECT_EQ(seen, (std::set<std::string>{"b", "c"}));
  // With b down, c is its group's last member: a has no safe neighbour.
  EXPECT_FALSE(pick_safe_neighbour(plan, "a", {"b"}, 0).has_value());
  seen.clear();
  for (uint64_t key = 0; key < 20; ++key) seen.insert(pick_safe_neighbour(plan, "c", {}, key).value_or(""));
  EXPECT_EQ(seen.count("c"), 0u);
  EXPECT_EQ(seen.count(""), 0u);
  EXPECT_FALSE(pick_safe_neighbour(plan, "nobody", {}, 0).has_value());
}

TEST(ChaosReference, EachPlanStartsAtTheRoundItsEventNamesNotWhereItIsLogged) {
  const test::TempDir tmp;
  const std::string metrics = tmp.file("metrics.jsonl");
  const auto initial = chaos_plan({"a", "b", "c", "d", "e", "f"}, 6, 64, 4);
  auto without = [&](std::vector<std::string> gone) {
    planner::Plan p = initial;
    for (auto& stage : p.stages) {
      std::vector<planner::StageDevice> kept;
      for (const auto& d : stage.devices)
        if (std::find(gone.begin(), gone.end(), d.id) == gone.end()) kept.push_back(d);
      stage.devices = kept;
    }
    return planner::plan_to_json(p);
  };
  const auto p1 = without({"c"}), p2 = without({"c", "e"});
  std::ofstream(metrics) << nlohmann::json({{"round", 0}, {"loss", 2.0}}).dump() << "\n"
                         << nlohmann::json({{"event", "failure"}, {"text", "c lost"}}).dump() << "\n"
                         << nlohmann::json({{"event", "replan"}, {"plan", p2}, {"from_round", 3}}).dump() << "\n"
                         // an interrupted recovery tried again from an earlier round
                         << nlohmann::json({{"event", "replan"}, {"plan", p1}, {"from_round", 2}}).dump() << "\n"
                         // round 1 committed before the failure, logged after it
                         << nlohmann::json({{"round", 1}, {"loss", 1.9}}).dump() << "\n"
                         << nlohmann::json({{"round", 2}, {"loss", 1.8}}).dump() << "\n"
                         << nlohmann::json({{"event", "rejoin"}, {"plan", planner::plan_to_json(initial)},
                                            {"from_round", 5}}).dump()
                         << "\n";
  const auto switches = plan_switches_from_metrics(metrics, initial)["switches"];
  ASSERT_EQ(switches.size(), 2u) << switches.dump();
  EXPECT_EQ(switches[0]["round"], 2);
  EXPECT_EQ(switches[0]["plan"]["stages"], p1["stages"]);
  EXPECT_EQ(switches[1]["round"], 5);
  EXPECT_EQ(switches[1]["plan"]["stages"], planner::plan_to_json(initial)["stages"]);
}

std::vector<CommittedRound> rounds(std::initializer_list<std::pair<uint64_t, double>> list) {
  std::vector<CommittedRound> out;
  for (const auto& [r, l] : list) out.push_back({r, l});
  return out;
}

TEST(ChaosVerdict, PassesOnlyWhenEveryRoundCommitsOnceInOrderWithTheSameLoss) {
  const auto reference = rounds({{0, 2.0}, {1, 1.5}, {2, 1.2}});
  EXPECT_TRUE(judge_chaos(reference, reference, 3, 0).passed);
  const auto gap = judge_chaos(rounds({{0, 2.0}, {2, 1.2}}), reference, 3, 0);
  EXPECT_FALSE(gap.passed);
  EXPECT_EQ(gap.rounds_lost, 1u);
  EXPECT_FALSE(judge_chaos(rounds({{0, 2.0}, {1, 1.5}, {1, 1.5}, {2, 1.2}}), reference, 3, 0).passed);
  EXPECT_FALSE(judge_chaos(rounds({{0, 2.0}, {2, 1.2}, {1, 1.5}}), reference, 3, 0).passed);
  const auto drift = judge_chaos(rounds({{0, 2.0}, {1, 1.5003}, {2, 1.2}}), reference, 3, 0);
  EXPECT_FALSE(drift.passed);
  EXPECT_NEAR(drift.max_loss_rel_diff, 2e-4, 1e-6);
  EXPECT_FALSE(judge_chaos(reference, reference, 3, 1e-3).passed) << "weights differ";
  EXPECT_TRUE(judge_chaos(rounds({{0, 2.0}, {1, 1.50001}, {2, 1.2}}), reference, 3, 5e-5).passed);
}

// The last `bytes` of a file (empty when it does not exist).
std::string tail_of(const std::string& path, size_t bytes) {
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > bytes ? text.substr(text.size() - bytes) : text;
}

// The campaign of the suite: 8 faults on env C, judged from its files: on
// the same plans, recovery changes no bit of the losses or the weights.
TEST(ChaosCampaign, EightFaultsLoseNoRoundAndChangeNoLoss) {
  test::TempDir tmp;
  const std::string out = tmp.file("chaos");
  const auto r = test::run({test::kAsteroid, "chaos", "--faults", "8", "--seed", "7", "--out", out},
                           testbed::Millis(1500000));
  ASSERT_EQ(r.status, 0) << r.out << r.err << "\nchaos.log ends:\n" << tail_of(out + "/chaos.log", 4000)
                         << "\nreference.log ends:\n" << tail_of(out + "/reference.log", 4000);
  const auto reference = read_committed_rounds(out + "/reference/metrics.jsonl");
  const auto chaos = read_committed_rounds(out + "/chaos/metrics.jsonl");
  const auto report = test::read_json(out + "/report.json");
  const uint64_t expected = report["rounds"].get<uint64_t>();
  ASSERT_EQ(chaos.size(), expected);
  ASSERT_EQ(reference.size(), expected);
  for (uint64_t i = 0; i < expected; ++i) {
    EXPECT_EQ(chaos[i].round, i);
    EXPECT_NEAR(chaos[i].loss, reference[i].loss, 1e-4 * std::abs(reference[i].loss)) << "round " << i;
  }
  if (HasFailure()) {
    // What to look at: the plans and the rounds they started from, in both runs.
    for (const char* run : {"/chaos/metrics.jsonl", "/reference/metrics.jsonl"}) {
      std::ifstream in(out + run);
      std::string line, events;
      while (std::getline(in, line)) {
        const auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_object() || !j.contains("event") || j.value("event", "") == "device_speed") continue;
        events += j.value("event", "") + " from_round=" + (j.contains("from_round") ? j["from_round"].dump() : "-") +
                  ": " + j.value("text", "") + "\n";
      }
      ADD_FAILURE() << run << " events:\n" << events;
    }
    // Both runs' folders (metrics, plans, logs) stay for a post-mortem; the
    // failure has not reproduced outside the full suite (issue 13).
    const fs::path kept = fs::path(ASTEROID_TEST_OUTPUT_DIR) / "chaos-campaign-failed";
    std::error_code ignored;
    fs::remove_all(kept, ignored);
    fs::create_directories(kept.parent_path(), ignored);
    fs::copy(out, kept, fs::copy_options::recursive, ignored);
    ADD_FAILURE() << "the campaign's folders are kept in " << kept.string();
  }
  // The faults happened and were recovered from.
  int injected = 0;
  for (const auto& f : report["injected"]) injected += f.value("ok", false);
  EXPECT_GE(injected, 8);
  // Every device killed shows up in a recovered failure.
  for (const auto& f : report["injected"]) {
    if (f.value("action", "") != "kill" || !f.value("ok", false)) continue;
    bool recovered = false;
    for (const auto& failure : report["failures"])
      for (const auto& d : failure["devices"]) recovered |= d == f["device"];
    EXPECT_TRUE(recovered) << f.dump();
  }
  EXPECT_LE(report["weights_rel_diff"].get<double>(), 1e-4);
  EXPECT_TRUE(report["passed"].get<bool>());
}

}  // namespace
}  // namespace asteroid::apps
