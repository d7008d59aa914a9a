// Which of the states the nodes keep a resume may continue from.
#include <gtest/gtest.h>

#include "supervision/node_states.h"

namespace asteroid::supervision {
namespace {

KeptOn on(const std::string& device, uint32_t begin, uint32_t end, uint64_t round, bool committed) {
  return {device, {begin, end, round, committed}};
}

TEST(NewestCovered, TheNewestCommittedRoundWhoseStatesCoverEveryLayer) {
  const std::vector<KeptOn> kept = {
      on("d0", 0, 2, 9, true),  on("d3", 0, 2, 8, false), on("d3", 0, 2, 9, false),  // stage 0 and its replicas
      on("d1", 2, 4, 9, true),  on("d2", 2, 4, 8, true),                            // a group: d2 missed commit 9
      on("d3", 4, 6, 9, true),  on("d0", 4, 6, 8, false), on("d0", 4, 6, 10, false)  // replica of a round not committed
  };
  auto cover = newest_covered(kept, 6, 5, 100);
  ASSERT_TRUE(cover);
  EXPECT_EQ(cover->round, 9u);  // round 10 is only a replica: no node committed it
  ASSERT_EQ(cover->pieces.size(), 3u);
  EXPECT_EQ(cover->pieces[0].entry.layer_begin, 0u);
  EXPECT_EQ(cover->pieces[1].device, "d1");
  EXPECT_EQ(cover->pieces[2].entry.layer_end, 6u);
  // Bounded by what the metrics logged, and only newer than the checkpoint.
  cover = newest_covered(kept, 6, 5, 8);
  ASSERT_TRUE(cover);
  EXPECT_EQ(cover->round, 8u);
  EXPECT_FALSE(newest_covered(kept, 6, 9, 100));
  EXPECT_FALSE(newest_covered(kept, 6, 5, 7));
}

TEST(NewestCovered, RangesOfDifferentPlansCoverTogetherAndAGapCoversNothing) {
  // After a re-plan: [0, 3) and [3, 6) of the new plan, [0, 2) of the old.
  const std::vector<KeptOn> kept = {on("d0", 0, 2, 4, true), on("d0", 0, 3, 7, true), on("d4", 3, 6, 7, true)};
  auto cover = newest_covered(kept, 6, 0, 100);
  ASSERT_TRUE(cover);
  EXPECT_EQ(cover->round, 7u);
  EXPECT_EQ(cover->pieces.size(), 2u);
  // Layers [2, 6) of round 4 are nowhere.
  EXPECT_FALSE(newest_covered({on("d0", 0, 2, 4, true), on("d1", 3, 6, 4, true)}, 6, 0, 100));
  // Replicas alone prove no commit.
  EXPECT_FALSE(newest_covered({on("d0", 0, 6, 4, false)}, 6, 0, 100));
}

}  // namespace
}  // namespace asteroid::supervision
