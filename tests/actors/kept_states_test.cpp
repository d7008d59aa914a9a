// What a node keeps of jobs' states, and what a release drops.
#include <gtest/gtest.h>

#include "actors/kept_states.h"

namespace asteroid::actors {
namespace {

using messages::Release;
using messages::StageState;

// A state of `values` float32 weights (no optimizer state).
StageState state(const std::string& job, uint32_t begin, uint32_t end, uint64_t round, size_t values = 4) {
  StageState s;
  s.job_id = job;
  s.layer_begin = begin;
  s.layer_end = end;
  s.round = round;
  std::vector<float> w(values, float(round));
  s.weights = messages::TensorBlob::copy_of(messages::DType::float32, {int64_t(values)}, w.data(), values * 4);
  return s;
}

TEST(KeptStates, FindsCommittedAndReplicaStatesAndKeepsTwoReplicaRounds) {
  KeptStates kept;
  kept.keep_committed(state("a", 0, 2, 5));
  kept.keep_committed(state("a", 0, 2, 6));  // replaces round 5
  for (uint64_t r : {3, 4, 5}) kept.store_replica(state("a", 2, 4, r));
  EXPECT_TRUE(kept.find("a", 0, 2, 6));
  EXPECT_FALSE(kept.find("a", 0, 2, 5));
  EXPECT_FALSE(kept.find("a", 2, 4, 3));  // the third replica round pushed it out
  EXPECT_EQ(kept.find("a", 2, 4, 5)->round, 5u);
  EXPECT_FALSE(kept.find("b", 2, 4, 5));
  EXPECT_EQ(kept.count(), 3u);
  EXPECT_EQ(kept.bytes(), 3u * 16);
  EXPECT_EQ(kept.list("a"), (std::vector<messages::KeptEntry>{{0, 2, 6, true}, {2, 4, 4, false}, {2, 4, 5, false}}));
  EXPECT_TRUE(kept.list("b").empty());
}

TEST(KeptStates, AReleaseDropsTheRangesItDoesNotKeepOfItsJobOnly) {
  KeptStates kept;
  kept.keep_committed(state("a", 0, 2, 1));
  kept.keep_committed(state("a", 0, 3, 1));
  kept.store_replica(state("a", 3, 6, 1));
  kept.store_replica(state("a", 3, 6, 2));
  kept.keep_committed(state("b", 0, 2, 1, 100));
  // Job a's new plan keeps [0, 3) and [3, 6): [0, 2) was an older plan's.
  EXPECT_EQ(kept.release(Release{"a", {{0, 3}, {3, 6}}}), 1u);
  EXPECT_FALSE(kept.find("a", 0, 2, 1));
  EXPECT_TRUE(kept.find("a", 0, 3, 1));
  EXPECT_TRUE(kept.find("a", 3, 6, 2));
  // Job a finished: all of it goes, job b's stays.
  EXPECT_EQ(kept.release(Release{"a", {}}), 3u);
  EXPECT_EQ(kept.count(), 1u);
  EXPECT_EQ(kept.bytes(), 400u);
  EXPECT_TRUE(kept.find("b", 0, 2, 1));
  EXPECT_EQ(kept.release(Release{"a", {}}), 0u);
}

}  // namespace
}  // namespace asteroid::actors
