#include "actors/restart_budget.h"

#include <gtest/gtest.h>

namespace asteroid::actors {
namespace {

using namespace std::chrono_literals;

TEST(RestartBudget, RestartsUpToItsBudgetWithinTheWindow) {
  RestartBudget budget(3, 60s);
  const auto t0 = RestartBudget::Clock::time_point{} + 1000s;
  EXPECT_TRUE(budget.take(t0));
  EXPECT_TRUE(budget.take(t0 + 10s));
  EXPECT_TRUE(budget.take(t0 + 20s));
  EXPECT_FALSE(budget.take(t0 + 30s));
  EXPECT_EQ(budget.exhausted(), "3 restart(s) within 60 s");
}

TEST(RestartBudget, ARestartLeavesTheBudgetAfterTheWindow) {
  RestartBudget budget(2, 60s);
  const auto t0 = RestartBudget::Clock::time_point{} + 1000s;
  EXPECT_TRUE(budget.take(t0));
  EXPECT_TRUE(budget.take(t0 + 50s));
  EXPECT_FALSE(budget.take(t0 + 59s));  // a refusal counts nothing
  EXPECT_TRUE(budget.take(t0 + 60s));   // the first one left the window
  EXPECT_FALSE(budget.take(t0 + 100s));
  EXPECT_TRUE(budget.take(t0 + 110s));
}

TEST(RestartBudget, ANoughtBudgetNeverRestarts) {
  RestartBudget budget(0, 60s);
  EXPECT_FALSE(budget.take(RestartBudget::Clock::now()));
}

}  // namespace
}  // namespace asteroid::actors
