// Heartbeat bookkeeping with literal times.
#include <gtest/gtest.h>

#include "supervision/health.h"

namespace asteroid::supervision {
namespace {

using namespace std::chrono_literals;
using Time = HealthTracker::Time;

TEST(HealthTracker, SilenceLongerThanTheDeadlineIsDeath) {
  HealthTracker health({100ms, 700ms});
  const Time t0{};
  health.watch("a", t0);
  health.watch("b", t0);
  health.heard("a", t0 + 600ms);
  EXPECT_TRUE(health.newly_dead(t0 + 700ms).empty()) << "exactly at the deadline is not yet past it";
  EXPECT_EQ(health.newly_dead(t0 + 701ms), std::vector<std::string>{"b"});
  EXPECT_TRUE(health.newly_dead(t0 + 800ms).empty()) << "a death is reported once";
  EXPECT_TRUE(health.alive("a"));
  EXPECT_EQ(health.newly_dead(t0 + 1301ms), std::vector<std::string>{"a"});
}

TEST(HealthTracker, ASlowButAnsweringDeviceStaysAlive) {
  HealthTracker health({100ms, 700ms});
  const Time t0{};
  health.watch("busy", t0);
  // Replies arrive late (600 ms apart) but within the deadline.
  for (int i = 1; i <= 10; ++i) {
    health.heard("busy", t0 + i * 600ms);
    EXPECT_TRUE(health.newly_dead(t0 + i * 600ms + 650ms).empty()) << "reply " << i;
  }
  EXPECT_TRUE(health.alive("busy"));
}

TEST(HealthTracker, GoneIsDeadAtOnceAndWatchingAgainRevives) {
  HealthTracker health({100ms, 700ms});
  const Time t0{};
  health.watch("a", t0);
  health.gone("a");
  EXPECT_EQ(health.newly_dead(t0 + 1ms), std::vector<std::string>{"a"});
  health.heard("a", t0 + 2ms);  // a late reply does not revive it
  EXPECT_FALSE(health.alive("a"));
  health.watch("a", t0 + 5s);   // it came back
  EXPECT_TRUE(health.alive("a"));
  EXPECT_TRUE(health.newly_dead(t0 + 5s + 100ms).empty());
}

}  // namespace
}  // namespace asteroid::supervision
