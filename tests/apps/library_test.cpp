// Asteroid as a library (docs/custom-models.md, "As a library"): the
// package this build installs configures and builds apps/examples/ as a
// project of its own, and its program composes a topology by hand and
// trains it under the job supervisor on real node processes, recovering
// from a device killed mid-run.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "apps/testbed/process.h"
#include "tests/support/local_nodes.h"
#include "tests/support/temp_dir.h"

namespace asteroid {
namespace {

using testbed::Millis;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void run_or_fail(const std::vector<std::string>& argv, Millis timeout) {
  const auto result = testbed::run_command(argv, timeout);
  ASSERT_TRUE(result.ok()) << argv[0] << " " << argv[1] << " exited with " << result.status << "\n"
                           << result.out << result.err;
}

TEST(Library, TheInstalledPackageBuildsTheExampleWhichRecoversFromAKilledDevice) {
  test_support::TempDir dir("asteroid-library");
  const std::string prefix = dir.file("prefix"), build = dir.file("build");
  run_or_fail({"cmake", "--install", ASTEROID_BUILD_DIR, "--prefix", prefix}, Millis(120000));
  run_or_fail({"cmake", "-S", std::string(ASTEROID_SOURCE_DIR) + "/apps/examples", "-B", build,
               "-DCMAKE_PREFIX_PATH=" + prefix},
              Millis(120000));
  run_or_fail({"cmake", "--build", build}, Millis(600000));

  // b dies in the backward of round 6: the job re-plans on a and c and
  // replays from its last committed round.
  test_support::LocalNodes nodes({"a", "b", "c"}, {}, {{"b", {"--crash-at", "backward:6"}}});
  std::vector<std::string> argv = {build + "/custom_topology"};
  for (const auto& d : nodes.cluster().devices) argv.push_back(d.host + ":" + std::to_string(d.port));
  argv.push_back("20");
  testbed::SpawnOptions options;
  options.argv = argv;
  options.cwd = dir.path();
  options.output_file = dir.file("example.out");
  auto example = testbed::Subprocess::spawn(options);
  const auto status = example.wait_for(Millis(300000));
  const std::string out = read_file(dir.file("example.out"));
  ASSERT_TRUE(status.has_value()) << "the example did not finish in 5 minutes:\n" << out;
  EXPECT_EQ(*status, 0) << out;

  std::istringstream lines(out);
  std::string line;
  uint64_t next = 0;
  bool failure = false, replan = false;
  while (std::getline(lines, line)) {
    unsigned long long round = 0;
    if (std::sscanf(line.c_str(), "round %llu loss", &round) == 1) {
      EXPECT_EQ(round, next) << "rounds commit once each, in order:\n" << out;
      next = round + 1;
    }
    failure |= line.rfind("event failure:", 0) == 0 && line.find("'b'") != std::string::npos;
    replan |= line.rfind("event replan:", 0) == 0;
  }
  EXPECT_EQ(next, 20u) << out;
  EXPECT_TRUE(failure) << "the on_event callback heard of b's failure:\n" << out;
  EXPECT_TRUE(replan) << out;
  EXPECT_NE(out.find("final plan: [0, 4) a:16; [4, 6) c:16;"), std::string::npos) << out;
  const std::string metrics = read_file(dir.file("custom_topology.jsonl"));
  EXPECT_NE(metrics.find("{\"round\":19,"), std::string::npos) << "the job's metrics file, as asteroid train writes it";
  EXPECT_NE(metrics.find("\"event\":\"failure\""), std::string::npos);
}

}  // namespace
}  // namespace asteroid
