// The hpp search against exhaustive enumeration of COST_MODEL.md's search
// space on random small instances (fixed seeds): same T_round, and the same
// tie-breaks (stages, peak memory fraction, devices used); with codecs, the
// enumeration also tries every codec of every boundary and all-reduce under
// each wire policy; the plan's codecs are the least lossy ones reaching its
// T_round.
#include <gtest/gtest.h>

#include <algorithm>

#include "planner/json_io.h"
#include "planner/search.h"
#include "tests/planner/instances.h"

namespace asteroid::planner {
namespace {

using testing::Enumerated;
using testing::InstanceSpec;

struct Case {
  uint32_t seed;
  InstanceSpec spec;
  int microbatches;
  int microbatch_size;
  OptimizerKind optimizer;
  int max_stages = 0;  // TrainingConfig::max_stages

  // M micro-batches of microbatch_size samples, the optimizer and the stage limit.
  TrainingConfig config() const {
    TrainingConfig cfg = testing::microbatched(microbatches, microbatch_size);
    cfg.optimizer = optimizer;
    cfg.max_stages = max_stages;
    return cfg;
  }
};

// The bounds of the sizes drawn for a case.
struct Sizes {
  int min_devices, max_devices, min_layers, max_layers, max_microbatches, max_microbatch_size;
};

// `count` cases of seeds first_seed, first_seed + 1, ...: case n's sizes
// drawn from one generator seeded with rng_seed (in this order: devices,
// layers, micro-batches, micro-batch size), its optimizer cycling with n;
// then adjust(case, n) sets the rest.
template <typename Adjust>
std::vector<Case> drawn_cases(uint32_t rng_seed, int count, uint32_t first_seed, const Sizes& sizes, Adjust adjust) {
  std::vector<Case> cases;
  std::mt19937 rng(rng_seed);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int n = 0; n < count; ++n) {
    Case c;
    c.seed = first_seed + n;
    c.spec.devices = pick(sizes.min_devices, sizes.max_devices);
    c.spec.layers = pick(sizes.min_layers, sizes.max_layers);
    c.microbatches = pick(1, sizes.max_microbatches);
    c.microbatch_size = pick(1, sizes.max_microbatch_size);
    c.optimizer = static_cast<OptimizerKind>(n % 3);
    adjust(c, n);
    cases.push_back(c);
  }
  return cases;
}

std::vector<Case> exactness_cases() {
  return drawn_cases(20240815, 240, 1000, {1, 6, 1, 8, 8, 8}, [](Case& c, int n) {
    c.spec.tight_memory = n % 2 == 1;
    c.spec.mixed_links = (n / 2) % 2 == 1;
    c.spec.monotone = n % 7 != 3;
  });
}

// Identical devices on uniform links: many plans tie in T_round exactly, so
// the tie-breaks (stages, peak memory, devices) decide.
std::vector<Case> tie_cases() {
  return drawn_cases(77, 100, 5000, {2, 6, 2, 8, 6, 8}, [](Case& c, int n) {
    c.spec.tight_memory = n % 2 == 1;
    c.spec.identical = true;
  });
}

// The search's plan ties the enumeration's best in T_round, stages, peak
// memory fraction and devices used.
void expect_same_optimum(const PlanResult& got, const Enumerated& want) {
  EXPECT_TRUE(same_round(got.evaluation.round_ms, want.round))
      << "search " << got.evaluation.round_ms << " vs enumeration " << want.round;
  EXPECT_EQ(static_cast<int>(got.plan.stages.size()), want.stages);
  EXPECT_NEAR(got.evaluation.peak_memory_fraction, want.peak, 1e-12);
  int used = 0;
  for (const Stage& s : got.plan.stages) used += static_cast<int>(s.devices.size());
  EXPECT_EQ(used, want.devices);
}

void compare_with_enumeration(const std::vector<Case>& cases) {
  int compared = 0, feasible = 0, multi_stage = 0, partial_sets = 0;
  for (const Case& c : cases) {
    const ProfileTables t = testing::random_tables(c.seed, c.spec);
    const TrainingConfig cfg = c.config();
    Enumerated want = testing::enumerate_best(t, cfg.batch, cfg.microbatches, c.optimizer, c.max_stages);
    PlanResult got = plan_hpp(t, cfg);
    SCOPED_TRACE("seed " + std::to_string(c.seed) + " devices " + std::to_string(c.spec.devices) +
                 " layers " + std::to_string(c.spec.layers) + " M " + std::to_string(c.microbatches) +
                 " B " + std::to_string(c.microbatch_size) + " max stages " + std::to_string(c.max_stages) +
                 " (" + std::to_string(want.plans) +
                 " feasible plans)");
    ++compared;
    ASSERT_EQ(got.feasible, want.found) << got.why;
    if (!want.found) continue;
    ++feasible;
    expect_same_optimum(got, want);
    if (c.max_stages > 0) {
      EXPECT_LE(want.stages, c.max_stages);
    }
    EXPECT_EQ(got.plan.predicted_round_ms, got.evaluation.round_ms);
    if (want.stages > 1) ++multi_stage;
    if (want.devices < c.spec.devices) ++partial_sets;
  }
  // The cases must exercise the interesting parts of the space.
  EXPECT_GE(feasible, static_cast<int>(cases.size()) * 6 / 10);
  EXPECT_GE(multi_stage, static_cast<int>(cases.size()) / 10);
  EXPECT_GE(partial_sets, static_cast<int>(cases.size()) / 20);
  std::printf("compared %d instances: %d feasible, %d multi-stage optima, %d leaving devices idle\n",
              compared, feasible, multi_stage, partial_sets);
}

TEST(SearchExact, MatchesExhaustiveEnumeration) {
  std::vector<Case> cases = exactness_cases();
  ASSERT_GE(cases.size(), 200u);
  compare_with_enumeration(cases);
}

// TrainingConfig::max_stages (what ranking by simulation asks for): still
// the exact optimum among the plans within the limit.
TEST(SearchExact, MatchesExhaustiveEnumerationUnderAStageLimit) {
  std::vector<Case> cases = exactness_cases();
  for (size_t i = 0; i < cases.size(); ++i) cases[i].max_stages = 1 + static_cast<int>(i % 3);
  compare_with_enumeration(cases);
}

TEST(SearchExact, BreaksTiesLikeTheEnumeration) { compare_with_enumeration(tie_cases()); }

// ---- Compressed wire: the codecs of every boundary and all-reduce ----------

struct WireCase {
  Case base;
  WirePolicy wire;
  double missing;  // probability that a device lacks a codec's speeds
  uint32_t block;
};

// Random instances (smaller than above: every codec assignment of every
// structure is enumerated) with random codec speeds, some devices lacking
// some codecs, under every policy; a fifth with identical devices.
std::vector<WireCase> wire_cases() {
  const int count = 300;
  const std::vector<Case> bases = drawn_cases(20261203, count, 9000, {1, 6, 1, 7, 6, 8}, [](Case& c, int n) {
    c.spec.tight_memory = n % 2 == 1;
    c.spec.mixed_links = (n / 2) % 2 == 1;
    c.spec.monotone = n % 7 != 3;
    c.spec.identical = n % 5 == 2;
    if (c.spec.identical) c.spec.devices = std::max(2, c.spec.devices);
  });
  const WirePolicy policies[] = {WirePolicy::auto_, WirePolicy::int8, WirePolicy::fp16, WirePolicy::int4,
                                 WirePolicy::exact};
  std::vector<WireCase> cases;
  for (int n = 0; n < count; ++n) {
    WireCase w;
    w.base = bases[n];
    w.wire = policies[n % 5];
    w.missing = n % 3 == 0 ? 0.0 : 0.3;
    w.block = n % 4 == 3 ? 8 : wire_codec::kDefaultBlock;
    cases.push_back(w);
  }
  return cases;
}

TEST(SearchExact, MatchesExhaustiveEnumerationOfEveryCodec) {
  int feasible = 0, multi_stage = 0, lossy = 0, slower_codec = 0, lossy_allreduce = 0, other_structure_less_lossy = 0;
  long long assignments = 0;
  for (const WireCase& w : wire_cases()) {
    const Case& c = w.base;
    testing::Instance in = testing::random_instance(c.seed, c.spec);
    testing::add_codec_speeds(in, c.seed, w.missing);
    ProfileTables t(in.cluster, in.profile);
    TrainingConfig cfg = c.config();
    cfg.wire = w.wire;
    cfg.codec_block = w.block;
    testing::EnumeratedWire want =
        testing::enumerate_best_wire(t, cfg.batch, cfg.microbatches, c.optimizer, w.wire, w.block);
    PlanResult got = plan_hpp(t, cfg);
    assignments += want.plans;
    SCOPED_TRACE("seed " + std::to_string(c.seed) + " wire " + wire_policy_name(w.wire) + " devices " +
                 std::to_string(c.spec.devices) + " layers " + std::to_string(c.spec.layers) + " M " +
                 std::to_string(c.microbatches) + " B " + std::to_string(c.microbatch_size) + " block " +
                 std::to_string(w.block) + " (" + std::to_string(want.plans) + " feasible assignments)");
    ASSERT_EQ(got.feasible, want.found) << got.why;
    if (!want.found) continue;
    ++feasible;
    expect_same_optimum(got, want);
    // The codec tie-break is exact for the plan's stages: no assignment of
    // them reaches its T_round with a smaller lossiness. (Another
    // structure equal in T_round, stages, peak and devices may have a less
    // lossy wire: counted, not required.)
    EvalOptions eo;
    eo.optimizer = c.optimizer;
    const auto [structure_round, structure_loss] = testing::best_codecs_for(t, got.plan, w.wire, eo);
    EXPECT_TRUE(same_round(structure_round, got.evaluation.round_ms));
    EXPECT_EQ(wire_lossiness(got.plan), structure_loss);
    if (structure_loss > want.lossiness) ++other_structure_less_lossy;
    EXPECT_EQ(got.plan.codec_block, w.block);
    EXPECT_EQ(got.plan.predicted_round_ms, got.evaluation.round_ms);
    EXPECT_TRUE(got.evaluation.warnings.empty()) << got.evaluation.warnings.front();
    // Every codec is usable where it is: allowed, and profiled on both ends.
    for (size_t s = 0; s < got.plan.stages.size(); ++s) {
      std::vector<std::string> ids;
      for (const StageDevice& d : got.plan.stages[s].devices) ids.push_back(d.id);
      auto usable = [&](Codec x, const std::vector<std::string>& on) {
        std::vector<Codec> u = testing::usable_codecs(t, w.wire, on);
        return std::find(u.begin(), u.end(), x) != u.end();
      };
      if (ids.size() > 1) EXPECT_TRUE(usable(got.plan.stages[s].allreduce, ids)) << "stage " << s;
      else EXPECT_EQ(got.plan.stages[s].allreduce, Codec::fp32);
      if (s + 1 < got.plan.stages.size()) {
        for (const StageDevice& d : got.plan.stages[s + 1].devices) ids.push_back(d.id);
        EXPECT_TRUE(usable(got.plan.stages[s].to_next, ids)) << "boundary " << s;
      } else {
        EXPECT_EQ(got.plan.stages[s].to_next, Codec::fp32);
      }
    }
    if (want.stages > 1) ++multi_stage;
    if (want.lossiness > 0) ++lossy;
    if (want.slower_boundary_codec) ++slower_codec;
    for (const Stage& s : want.plan.stages)
      if (s.devices.size() > 1 && s.allreduce != Codec::fp32) ++lossy_allreduce;
  }
  // The cases must exercise the codecs, including optima that put a
  // slower-than-possible codec on a boundary.
  EXPECT_GE(feasible, 90);
  EXPECT_GE(multi_stage, 15);
  EXPECT_GE(lossy, 30);
  EXPECT_GE(lossy_allreduce, 5);
  EXPECT_GE(slower_codec, 1);
  std::printf("compared %d feasible instances (%lld codec assignments): %d multi-stage optima, %d with lossy codecs "
              "(%d lossy all-reduces), %d where a faster boundary codec would be slower overall, %d where another "
              "tying structure has a less lossy wire\n",
              feasible, assignments, multi_stage, lossy, lossy_allreduce, slower_codec, other_structure_less_lossy);
}

// The exact wire, or a profile without codec speeds, plans as COST_MODEL.md:
// the same plan files (byte for byte) and numbers whatever the rest says.
TEST(SearchExact, ExactWireIsTheCostModelsPlan) {
  int compared = 0;
  for (const Case& c : exactness_cases()) {
    if (c.seed % 2) continue;
    testing::Instance plain = testing::random_instance(c.seed, c.spec);
    testing::Instance with_speeds = plain;
    testing::add_codec_speeds(with_speeds, c.seed, 0.0);
    ProfileTables tp(plain.cluster, plain.profile), ts(with_speeds.cluster, with_speeds.profile);
    const TrainingConfig cfg = c.config();
    for (Strategy strategy : {Strategy::hpp, Strategy::dp, Strategy::pp}) {
      TrainingConfig exact = cfg, auto_wire = cfg;
      auto_wire.wire = WirePolicy::auto_;
      PlanResult a = make_plan(tp, exact, strategy);       // as before codecs existed
      PlanResult b = make_plan(ts, exact, strategy);       // speeds, but --wire exact
      PlanResult d = make_plan(tp, auto_wire, strategy);   // --wire auto, but no speeds
      SCOPED_TRACE("seed " + std::to_string(c.seed) + " " + strategy_name(strategy));
      for (const PlanResult* r : {&b, &d}) {
        EXPECT_EQ(plan_to_json(r->plan).dump(), plan_to_json(a.plan).dump());
        EXPECT_EQ(evaluation_to_json(r->evaluation, c.optimizer).dump(),
                  evaluation_to_json(a.evaluation, c.optimizer).dump());
        EXPECT_EQ(r->feasible, a.feasible);
      }
      for (const Stage& s : a.plan.stages) {
        EXPECT_EQ(s.to_next, Codec::fp32);
        EXPECT_EQ(s.allreduce, Codec::fp32);
      }
      ++compared;
    }
  }
  EXPECT_GE(compared, 300);
}

}  // namespace
}  // namespace asteroid::planner
