// The bucketed ring all-reduce's arithmetic, without actors: which flat
// ranges form the buckets, when a bucket is complete, and that the ring's
// chunk schedule sums every chunk once and hands it to every member.
#include <gtest/gtest.h>

#include <numeric>
#include <random>

#include "actors/all_reduce.h"

namespace asteroid::actors {
namespace {

TEST(GradientBuckets, CoverTheParametersFromTheLastOneBackwards) {
  // Parameters of 10, 300, 5, 200, 7 values; buckets of at least 250.
  GradientBuckets buckets({10, 300, 5, 200, 7}, 250);
  ASSERT_EQ(buckets.buckets().size(), 2u);
  // Last first: {5, 200, 7} = 212 < 250, so 300 joins: [10, 522).
  EXPECT_EQ(buckets.buckets()[0].begin, 10);
  EXPECT_EQ(buckets.buckets()[0].end, 522);
  // Then only the first parameter is left: a bucket under the minimum.
  EXPECT_EQ(buckets.buckets()[1].begin, 0);
  EXPECT_EQ(buckets.buckets()[1].end, 10);
  EXPECT_EQ(buckets.bucket_of(4), 0u);
  EXPECT_EQ(buckets.bucket_of(1), 0u);
  EXPECT_EQ(buckets.bucket_of(0), 1u);
  EXPECT_EQ(buckets.offset(3), 315);
}

TEST(GradientBuckets, EveryValueBelongsToExactlyOneBucket) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int64_t> sizes(1 + rng() % 12);
    for (auto& s : sizes) s = static_cast<int64_t>(rng() % 50);
    const int64_t min_values = 1 + static_cast<int64_t>(rng() % 80);
    GradientBuckets buckets(sizes, min_values);
    const int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
    int64_t end = total;
    for (size_t b = 0; b < buckets.buckets().size(); ++b) {
      const auto& range = buckets.buckets()[b];
      EXPECT_EQ(range.end, end) << "trial " << trial;  // contiguous, last parameters first
      EXPECT_LE(range.begin, range.end);
      if (range.begin > 0) EXPECT_GE(range.end - range.begin, min_values);
      end = range.begin;
    }
    EXPECT_EQ(end, 0) << "trial " << trial;
    for (size_t p = 0; p < sizes.size(); ++p) {
      const auto& range = buckets.buckets()[buckets.bucket_of(p)];
      EXPECT_GE(buckets.offset(p), range.begin);
      EXPECT_LE(buckets.offset(p) + sizes[p], range.end);
    }
  }
}

TEST(GradientBuckets, ABucketIsCompleteWhenItsLastParameterIsFinal) {
  GradientBuckets buckets({10, 300, 5, 200, 7}, 250);
  EXPECT_FALSE(buckets.ready(4));
  EXPECT_FALSE(buckets.ready(3));
  EXPECT_FALSE(buckets.ready(4));  // twice: no effect
  EXPECT_FALSE(buckets.ready(2));
  EXPECT_EQ(buckets.ready(1), std::optional<size_t>(0));
  EXPECT_TRUE(buckets.complete(0));
  EXPECT_FALSE(buckets.complete(1));
  EXPECT_EQ(buckets.ready(0), std::optional<size_t>(1));
  buckets.reset();
  EXPECT_FALSE(buckets.complete(0));
  EXPECT_FALSE(buckets.ready(1));
}

TEST(GradientBuckets, NoParametersIsOneEmptyBucketAndBadSizesAreRefused) {
  GradientBuckets none({}, 4);
  ASSERT_EQ(none.buckets().size(), 1u);
  EXPECT_TRUE(none.complete(0));
  EXPECT_THROW(GradientBuckets({1, 2}, 0), std::invalid_argument);
  EXPECT_THROW(GradientBuckets({1, -2}, 4), std::invalid_argument);
}

// Runs the ring's schedule over n members' vectors as the stage actors do
// (reduce-scatter adds, all-gather copies) and checks everyone ends with
// the sum, each chunk summed once.
TEST(Ring, EveryMemberEndsWithTheSumOfEveryChunk) {
  for (uint32_t n = 2; n <= 5; ++n) {
    const int64_t total = 17;
    std::vector<std::vector<double>> values(n, std::vector<double>(total));
    std::vector<double> sum(total, 0);
    for (uint32_t m = 0; m < n; ++m) {
      for (int64_t i = 0; i < total; ++i) {
        values[m][i] = (m + 1) * 100 + i;
        sum[i] += values[m][i];
      }
    }
    const Ring ring0{n, 0};
    for (uint32_t step = 0; step < ring0.steps(); ++step) {
      // Every member sends at the same step; member m receives from m - 1.
      std::vector<std::vector<double>> sent(n);
      for (uint32_t m = 0; m < n; ++m) {
        const Ring ring{n, m};
        auto [b, e] = ring.chunk_bounds(ring.chunk_sent_at(step), total);
        sent[m].assign(values[m].begin() + b, values[m].begin() + e);
      }
      for (uint32_t m = 0; m < n; ++m) {
        const Ring ring{n, m};
        const uint32_t from = ring.wrap(int64_t{m} - 1);
        ASSERT_EQ(Ring({n, from}).next(), m);
        const uint32_t chunk = ring.chunk_received_at(step);
        ASSERT_EQ(chunk, Ring({n, from}).chunk_sent_at(step)) << "n " << n << " step " << step;
        auto [b, e] = ring.chunk_bounds(chunk, total);
        for (int64_t i = b; i < e; ++i) {
          values[m][i] = step < n - 1 ? values[m][i] + sent[from][i - b] : sent[from][i - b];
        }
      }
    }
    for (uint32_t m = 0; m < n; ++m) EXPECT_EQ(values[m], sum) << "n " << n << " member " << m;
  }
}

}  // namespace
}  // namespace asteroid::actors
