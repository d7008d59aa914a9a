#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "apps/testbed/process.h"
#include "tests/support/temp_dir.h"

namespace asteroid::testbed {
namespace {

using test_support::TempDir;

TEST(Process, RunCommandCapturesOutputAndStatus) {
  CommandResult r = run_command({"sh", "-c", "echo out; echo err >&2; exit 7"});
  EXPECT_EQ(r.status, 7);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
}

TEST(Process, RunCommandTimesOutAndKills) {
  auto t0 = Clock::now();
  CommandResult r = run_command({"sleep", "30"}, Millis(200));
  EXPECT_EQ(r.status, -1);
  EXPECT_LT(Clock::now() - t0, Millis(5000));
}

TEST(Process, MissingProgramIsASpawnError) {
  SpawnOptions o;
  o.argv = {"/nonexistent/program"};
  EXPECT_THROW(Subprocess::spawn(o), SpawnError);
  o.argv = {"true"};
  o.netns_path = "/run/netns/ast-does-not-exist";
  EXPECT_THROW(Subprocess::spawn(o), SpawnError);
}

TEST(Process, RunCheckedNamesTheCommand) {
  try {
    run_checked({"sh", "-c", "echo boom >&2; exit 2"});
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("boom"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("sh -c"), std::string::npos) << e.what();
  }
}

TEST(Process, DestructorKillsTheChild) {
  ProcessRef ref;
  {
    SpawnOptions o;
    o.argv = {"sleep", "30"};
    Subprocess p = Subprocess::spawn(o);
    ref = p.ref();
    EXPECT_TRUE(ref.alive());
  }
  EXPECT_FALSE(ref.alive());
}

TEST(Process, StopEscalatesToSigkill) {
  SpawnOptions o;
  o.argv = {"sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"};
  o.capture_stdout = true;
  Subprocess p = Subprocess::spawn(o);
  ASSERT_EQ(p.read_line(Clock::now() + Millis(5000)), std::optional<std::string>("ready"));
  ProcessRef ref = p.release();
  auto t0 = Clock::now();
  auto left = stop_processes({ref}, Millis(300));
  EXPECT_TRUE(left.empty());
  EXPECT_FALSE(ref.alive());
  EXPECT_LT(Clock::now() - t0, Millis(4000));
}

TEST(Process, FrozenProcessStopsToo) {
  SpawnOptions o;
  o.argv = {"sleep", "30"};
  Subprocess p = Subprocess::spawn(o);
  ::kill(p.pid(), SIGSTOP);
  auto deadline = Clock::now() + Millis(3000);
  while (p.ref().state() != 'T' && Clock::now() < deadline) std::this_thread::sleep_for(Millis(2));
  EXPECT_EQ(p.ref().state(), 'T');
  EXPECT_EQ(p.stop(Millis(2000)), 128 + SIGTERM);
}

TEST(Process, RecycledPidIsNotAlive) {
  SpawnOptions o;
  o.argv = {"sleep", "30"};
  Subprocess p = Subprocess::spawn(o);
  ProcessRef wrong{p.pid(), p.ref().start_time + 12345};
  EXPECT_FALSE(wrong.alive());
  EXPECT_TRUE(p.ref().alive());
}

TEST(Process, EnvironmentAndOutputFile) {
  const TempDir dir("asteroid-proc");
  const std::string out = dir.file("out");
  SpawnOptions o;
  o.argv = {"sh", "-c", "echo \"$ASTEROID_X\""};
  o.env = {{"ASTEROID_X", "hello"}};
  o.output_file = out;
  Subprocess p = Subprocess::spawn(o);
  EXPECT_EQ(p.wait_for(Millis(5000)), std::optional<int>(0));
  std::ifstream in(out);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "hello");
}

TEST(Process, OnForkedRunsBeforeExec) {
  const TempDir dir("asteroid-fork");
  const std::string marker = dir.file("ran");
  SpawnOptions o;
  o.argv = {"touch", marker};
  pid_t seen = 0;
  o.on_forked = [&](pid_t pid) {
    seen = pid;
    // The child has not exec'd yet: nothing it would do has happened.
    EXPECT_FALSE(std::ifstream(marker).good());
  };
  Subprocess p = Subprocess::spawn(o);
  EXPECT_EQ(seen, p.pid());
  EXPECT_EQ(p.wait_for(Millis(5000)), std::optional<int>(0));
  EXPECT_TRUE(std::ifstream(marker).good());
  ::unlink(marker.c_str());
  // A recorder that fails: the child never runs the program.
  o.on_forked = [](pid_t) { throw std::runtime_error("cannot record"); };
  EXPECT_THROW(Subprocess::spawn(o), std::runtime_error);
  EXPECT_FALSE(std::ifstream(marker).good());
}

}  // namespace
}  // namespace asteroid::testbed
