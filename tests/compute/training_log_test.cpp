// The metrics file, the summary file and the progress line.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>

#include "compute/training_log.h"
#include "test_util.h"

namespace asteroid::compute {
namespace {

using testing::read_text;
using testing::TempDir;

TEST(MetricsWriter, WritesOneJsonObjectPerRound) {
  TempDir dir;
  const std::string path = dir.file("m.jsonl");
  {
    MetricsWriter w(path);
    ASSERT_TRUE(w.enabled());
    w.write({0, 2.5, 64, 12.25, {}});
    w.write({1, 1.5, 64, 10.0, {{"stage0_ms", 3.5}, {"stages", 2}}});
    // Flushed per line: readable while the run goes on.
    EXPECT_EQ(read_text(path),
              "{\"round\":0,\"loss\":2.5,\"samples\":64,\"ms\":12.25}\n"
              "{\"round\":1,\"loss\":1.5,\"samples\":64,\"ms\":10.0,\"stage0_ms\":3.5,\"stages\":2}\n");
  }
  EXPECT_EQ(MetricsWriter::to_json_line({3, NAN, 1, 1.0, {}}),
            "{\"round\":3,\"loss\":null,\"samples\":1,\"ms\":1.0}");
  MetricsWriter none("");
  EXPECT_FALSE(none.enabled());
  none.write({0, 1, 1, 1, {}});  // no-op
}

TEST(MetricsWriter, UnwritablePathIsAnErrorNamingIt) {
  try {
    MetricsWriter w("/nonexistent-dir/m.jsonl");
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/m.jsonl"), std::string::npos) << e.what();
  }
  EXPECT_THROW(check_writable("/nonexistent-dir/s.json", "summary file"), std::runtime_error);
  EXPECT_THROW(write_summary("/nonexistent-dir/s.json", {}), std::runtime_error);
}

TEST(Summary, HasTheRequiredFieldsAndExtras) {
  TrainingSummary s;
  s.test_accuracy = 0.875;
  s.samples_per_s = 1500.5;
  s.rounds = 937;
  s.numbers["train_seconds"] = 40;
  s.strings["model"] = "fmnist-cnn";
  s.json["stages"] = "[{\"layers\":[0,3]}]";
  TempDir dir;
  write_summary(dir.file("s.json"), s);
  const auto j = nlohmann::json::parse(read_text(dir.file("s.json")));
  EXPECT_EQ(j["test_accuracy"], 0.875);
  EXPECT_EQ(j["samples_per_s"], 1500.5);
  EXPECT_EQ(j["rounds"], 937);
  EXPECT_EQ(j["train_seconds"], 40);
  EXPECT_TRUE(j["train_seconds"].is_number_integer());  // whole extras are written as integers
  EXPECT_EQ(j["model"], "fmnist-cnn");
  EXPECT_EQ(j["stages"][0]["layers"][1], 3);
  s.json["bad"] = "{not json";
  EXPECT_THROW(summary_json(s), std::invalid_argument);
}

TEST(ProgressLine, FormatsRoundLossRateAndEta) {
  EXPECT_EQ(ProgressLine::format(120, 937, 0.51234, 1530.4, 53),
            "round 120/937  loss 0.5123  1530 samples/s  ETA 0:53");
  EXPECT_EQ(ProgressLine::format(1, 10, 2.0, 1, 3725), "round 1/10  loss 2.0000  1 samples/s  ETA 1:02:05");
  EXPECT_EQ(ProgressLine::format(0, 10, 2.0, 0, NAN), "round 0/10  loss 2.0000  0 samples/s  ETA ?");
}

// Runs updates against a fake clock into a temporary file; returns the text.
std::string drive(ProgressLine::Mode mode) {
  std::FILE* f = std::tmpfile();
  double now = 100.0;
  {
    ProgressLine p(10, mode, f, [&] { return now; }, 2.0);
    for (int r = 1; r <= 10; ++r) {
      now += 0.5;  // 64 samples every half second
      p.update(r, 1.0 / r, 64 * r);
    }
    p.finish();
    p.finish();  // idempotent
  }
  std::rewind(f);
  std::string text;
  char buf[512];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  return text;
}

TEST(ProgressLine, PlainModePrintsLinesEveryIntervalAndAtTheEnd) {
  const std::string text = drive(ProgressLine::Mode::plain);
  // First update (t=0.5), then t>=2.5 (round 5), t>=4.5 (round 9), then finish (round 10).
  EXPECT_EQ(text,
            "round 1/10  loss 1.0000  128 samples/s  ETA 0:05\n"
            "round 5/10  loss 0.2000  128 samples/s  ETA 0:03\n"
            "round 9/10  loss 0.1111  128 samples/s  ETA 0:01\n"
            "round 10/10  loss 0.1000  128 samples/s  ETA 0:00\n");
}

TEST(ProgressLine, TerminalModeRedrawsInPlace) {
  const std::string text = drive(ProgressLine::Mode::terminal);
  EXPECT_EQ(text.front(), '\r');
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);  // only the final line ends
  EXPECT_EQ(std::count(text.begin(), text.end(), '\r'), 11);  // ten updates and the final redraw
  EXPECT_NE(text.find("round 10/10"), std::string::npos);
  EXPECT_TRUE(drive(ProgressLine::Mode::off).empty());
}

}  // namespace
}  // namespace asteroid::compute
