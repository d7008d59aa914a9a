// Slow against planned, relative to the others: the straggler rule.
#include <gtest/gtest.h>

#include "supervision/straggler_watch.h"

namespace asteroid::supervision {
namespace {

using Measured = std::map<std::string, double>;

TEST(StragglerWatch, ADeviceFarSlowerThanPlannedForSomeRoundsIsReportedOnceThenBack) {
  // a and b predicted 100 ms, c (a slower device, planned so) 300 ms.
  StragglerWatch watch({3.0, 3}, {{"a", 100}, {"b", 100}, {"c", 300}});
  EXPECT_TRUE(watch.observe(0, {{"a", 900}, {"b", 900}, {"c", 9000}}).empty());  // start-up: not judged
  for (uint64_t r = 1; r <= 5; ++r) {
    EXPECT_TRUE(watch.observe(r, {{"a", 110}, {"b", 95}, {"c", 320}}).empty()) << r;  // as planned
  }
  // c slows down 5x: reported in the third slow round, once.
  EXPECT_TRUE(watch.observe(6, {{"a", 100}, {"b", 100}, {"c", 1500}}).empty());
  EXPECT_TRUE(watch.observe(7, {{"a", 100}, {"b", 100}, {"c", 1500}}).empty());
  auto verdicts = watch.observe(8, {{"a", 100}, {"b", 100}, {"c", 1500}});
  ASSERT_EQ(verdicts.size(), 1u);
  EXPECT_EQ(verdicts[0].device, "c");
  EXPECT_TRUE(verdicts[0].straggling);
  EXPECT_EQ(verdicts[0].round, 8u);
  EXPECT_DOUBLE_EQ(verdicts[0].ratio_to_median, 5.0);
  EXPECT_DOUBLE_EQ(verdicts[0].predicted_ms, 300);
  EXPECT_TRUE(watch.straggling("c"));
  EXPECT_TRUE(watch.observe(9, {{"a", 100}, {"b", 100}, {"c", 1500}}).empty());
  // A round back to normal does not end it; three do.
  EXPECT_TRUE(watch.observe(10, {{"a", 100}, {"b", 100}, {"c", 300}}).empty());
  EXPECT_TRUE(watch.observe(11, {{"a", 100}, {"b", 100}, {"c", 1500}}).empty());
  EXPECT_TRUE(watch.observe(12, {{"a", 100}, {"b", 100}, {"c", 300}}).empty());
  EXPECT_TRUE(watch.observe(13, {{"a", 100}, {"b", 100}, {"c", 300}}).empty());
  verdicts = watch.observe(14, {{"a", 100}, {"b", 100}, {"c", 300}});
  ASSERT_EQ(verdicts.size(), 1u);
  EXPECT_FALSE(verdicts[0].straggling);
  EXPECT_FALSE(watch.straggling("c"));
}

TEST(StragglerWatch, ALoadThatSlowsEveryDeviceAlikeIsNoStraggler) {
  StragglerWatch watch({3.0, 2}, {{"a", 100}, {"b", 200}});
  watch.observe(0, {});
  for (uint64_t r = 1; r < 10; ++r) EXPECT_TRUE(watch.observe(r, {{"a", 800}, {"b", 1600}}).empty());
  // Two devices: each is compared with the other, so a slow one shows.
  watch.observe(10, {{"a", 100}, {"b", 1000}});
  const auto verdicts = watch.observe(11, {{"a", 100}, {"b", 1000}});
  ASSERT_EQ(verdicts.size(), 1u);
  EXPECT_EQ(verdicts[0].device, "b");
}

TEST(StragglerWatch, WithoutAPredictionEachDeviceLearnsItsOwnFromItsFirstRounds) {
  // A plan made without a profile: a device 4x slower by nature is not a
  // straggler; one that becomes 4x slower than it was is.
  StragglerWatch watch({3.0, 3});
  watch.observe(0, {});
  for (uint64_t r = 1; r <= 6; ++r) EXPECT_TRUE(watch.observe(r, {{"fast", 100}, {"slow", 400}, {"x", 150}}).empty());
  watch.observe(7, {{"fast", 450}, {"slow", 400}, {"x", 150}});
  watch.observe(8, {{"fast", 450}, {"slow", 400}, {"x", 150}});
  const auto verdicts = watch.observe(9, {{"fast", 450}, {"slow", 400}, {"x", 150}});
  ASSERT_EQ(verdicts.size(), 1u);
  EXPECT_EQ(verdicts[0].device, "fast");
  EXPECT_DOUBLE_EQ(verdicts[0].predicted_ms, 100);
}

TEST(StragglerWatch, OneDeviceAloneHasNothingToBeComparedWith) {
  StragglerWatch watch({3.0, 1}, {{"a", 100}});
  watch.observe(0, {});
  for (uint64_t r = 1; r < 5; ++r) EXPECT_TRUE(watch.observe(r, {{"a", 10000}}).empty());
}

}  // namespace
}  // namespace asteroid::supervision
