#include <gtest/gtest.h>

#include "actors/routing.h"

namespace asteroid::actors {
namespace {

TEST(Routing, MemberRangesTileTheMicrobatchInMemberOrder) {
  const auto ranges = member_ranges({10, 6});
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0], (Range{0, 10}));
  EXPECT_EQ(ranges[1], (Range{10, 16}));
}

TEST(Routing, ASliceIsSplitAtTheOtherGroupsBoundaries) {
  // Group A = {10, 6}, group B = {4, 5, 7}: A's member 0 owns [0, 10), which
  // B's members own as [0, 4), [4, 9) and [9, 10).
  const auto theirs = member_ranges({4, 5, 7});
  const auto slices = route({0, 10}, theirs);
  ASSERT_EQ(slices.size(), 3u);
  EXPECT_EQ(slices[0].member, 0u);
  EXPECT_EQ(slices[0].samples, (Range{0, 4}));
  EXPECT_EQ(slices[1].member, 1u);
  EXPECT_EQ(slices[1].samples, (Range{4, 9}));
  EXPECT_EQ(slices[2].member, 2u);
  EXPECT_EQ(slices[2].samples, (Range{9, 10}));
  // A's member 1 owns [10, 16): all of it goes to B's member 2.
  const auto second = route({10, 16}, theirs);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].member, 2u);
  EXPECT_EQ(second[0].samples, (Range{10, 16}));
}

TEST(Routing, EverySampleIsSentExactlyOnce) {
  const std::vector<std::vector<uint32_t>> groups = {{16}, {3, 13}, {5, 5, 6}, {1, 1, 1, 13}};
  for (const auto& from : groups) {
    for (const auto& to : groups) {
      std::vector<int> received(16, 0);
      const auto theirs = member_ranges(to);
      for (const Range& mine : member_ranges(from)) {
        for (const Slice& s : route(mine, theirs)) {
          EXPECT_GE(s.samples.begin, theirs[s.member].begin);
          EXPECT_LE(s.samples.end, theirs[s.member].end);
          for (uint32_t i = s.samples.begin; i < s.samples.end; ++i) ++received[i];
        }
      }
      for (int count : received) EXPECT_EQ(count, 1);
    }
  }
}

}  // namespace
}  // namespace asteroid::actors
