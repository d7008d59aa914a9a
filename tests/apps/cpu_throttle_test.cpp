// compute/cpu_throttle.h (header-only, torch-free; tested here with the testbed).
#include "compute/cpu_throttle.h"
#include "tests/support/temp_dir.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

namespace asteroid::compute {
namespace {

using SC = std::chrono::steady_clock;
using test_support::TempDir;

double thread_cpu_s() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Busy work of about `seconds` of this thread's CPU time.
void spin_cpu(double seconds) {
  double end = thread_cpu_s() + seconds;
  volatile unsigned long long x = 1;
  while (thread_cpu_s() < end)
    for (int i = 0; i < 10000; ++i) x = x * 6364136223846793005ULL + 1;
}

TEST(CpuThrottle, FullShareDoesNotSleep) {
  CpuThrottle t(1.0);
  auto t0 = SC::now();
  t.run([] { spin_cpu(0.02); });
  EXPECT_EQ(t.slept().count(), 0);
  EXPECT_FALSE(t.active());
  EXPECT_LT(SC::now() - t0, std::chrono::seconds(2));
}

TEST(CpuThrottle, QuarterShareTakesFourTimesTheCpuTime) {
  CpuThrottle t(0.25);
  double cpu0 = thread_cpu_s();
  auto t0 = SC::now();
  for (int i = 0; i < 10; ++i) t.run([] { spin_cpu(0.01); });
  double cpu = thread_cpu_s() - cpu0;
  double wall = std::chrono::duration<double>(SC::now() - t0).count();
  // The wall time is what a quarter core would take; more only when this
  // machine is so busy that the compute itself took longer.
  EXPECT_GE(wall / cpu, 4.0 * 0.95);
  EXPECT_LE(wall / cpu, 4.0 * 1.5);
}

TEST(CpuThrottle, RunReturnsTheValue) {
  CpuThrottle t(0.5);
  int v = t.run([] { return 42; });
  EXPECT_EQ(v, 42);
  std::string s = t.run([]() -> std::string { return "x"; });
  EXPECT_EQ(s, "x");
}

TEST(CpuThrottle, SectionThrottlesItsScope) {
  CpuThrottle t(0.5);
  auto t0 = SC::now();
  {
    CpuThrottle::Section s(t);
    spin_cpu(0.03);
  }
  double wall = std::chrono::duration<double>(SC::now() - t0).count();
  EXPECT_GE(wall, 0.06 * 0.95);
}

TEST(CpuThrottle, ControlFileDividesTheShare) {
  const TempDir dir("asteroid-throttle");
  const std::string path = dir.file("slow");
  {
    std::ofstream(path) << "2\n";
  }
  CpuThrottle t(0.5);
  t.set_control_file(path);
  EXPECT_DOUBLE_EQ(t.slow_factor(), 2);
  EXPECT_DOUBLE_EQ(t.share(), 0.25);
  {
    std::ofstream(path) << "garbage\n";
  }
  CpuThrottle u(0.5);
  u.set_control_file(path);
  EXPECT_DOUBLE_EQ(u.share(), 0.5);  // unreadable: no change
  ::unlink(path.c_str());
  CpuThrottle w(1.0);
  w.set_control_file(path);  // missing: factor 1
  EXPECT_DOUBLE_EQ(w.slow_factor(), 1);
  EXPECT_FALSE(w.active());
}

TEST(CpuThrottle, FromEnvironment) {
  ::setenv("ASTEROID_CPU_SHARE", "0.2", 1);
  ::unsetenv("ASTEROID_THROTTLE_FILE");
  EXPECT_DOUBLE_EQ(CpuThrottle::from_environment().share(), 0.2);
  EXPECT_DOUBLE_EQ(CpuThrottle::from_environment(0.4).share(), 0.4);  // the flag wins
  ::setenv("ASTEROID_CPU_SHARE", "nonsense", 1);
  EXPECT_DOUBLE_EQ(CpuThrottle::from_environment().share(), 1.0);
  ::unsetenv("ASTEROID_CPU_SHARE");
  EXPECT_DOUBLE_EQ(CpuThrottle::from_environment().share(), 1.0);
}

TEST(CpuThrottle, TargetWall) {
  using N = CpuThrottle::Nanos;
  EXPECT_EQ(CpuThrottle::target_wall(N(1000), 0.25), N(4000));
  EXPECT_EQ(CpuThrottle::target_wall(N(1000), 1.0), N(1000));
  EXPECT_EQ(CpuThrottle::target_wall(N(1000), 0.0), N(1000));
}

}  // namespace
}  // namespace asteroid::compute
