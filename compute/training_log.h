// What a training run reports, shared by single-device training and the
// distributed coordinator: the per-round metrics file (JSON Lines), the
// summary file (one JSON object) and the progress line on the terminal.
// No Torch (link asteroid_compute_lite).
//
// Files are opened when the writer is made, so a bad path fails before any
// training starts. Not thread-safe: one thread writes a given log.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace asteroid::compute {

// Throws std::runtime_error naming `what` and `path` unless `path` can be
// created (or truncated) for writing. The file is left empty.
void check_writable(const std::string& path, const std::string& what);

// One mini-batch (round) of training.
struct RoundRecord {
  int64_t round = 0;  // 0-based global round (counting across epochs)
  double loss = 0;    // mean loss over the round's mini-batch
  int64_t samples = 0;  // samples in the round
  double ms = 0;        // wall time of the round
  std::map<std::string, double> extra;  // more numeric fields, written after the four above
};

// The metrics file: one JSON object per line,
// {"round":0,"loss":2.30,"samples":64,"ms":12.5,...}, flushed per line.
class MetricsWriter {
 public:
  // An empty path makes a writer that writes nothing; `append` continues an
  // existing file (a resumed run). Throws std::runtime_error naming the path
  // when it cannot be opened.
  explicit MetricsWriter(const std::string& path, bool append = false);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  bool enabled() const { return file_ != nullptr; }
  void write(const RoundRecord& record);
  // Any other line, e.g. {"event":"replan",...} between the rounds.
  void write_line(const std::string& json_object);
  static std::string to_json_line(const RoundRecord& record);  // without the newline

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// The summary file: {"test_accuracy":0.87,"samples_per_s":1500,"rounds":937,...}.
struct TrainingSummary {
  double test_accuracy = 0;  // fraction in [0, 1]
  double samples_per_s = 0;  // training throughput (evaluation excluded)
  int64_t rounds = 0;
  std::map<std::string, double> numbers;       // more numeric fields
  std::map<std::string, std::string> strings;  // more string fields
  std::map<std::string, std::string> json;     // more fields whose value is JSON text
};

// Throws std::invalid_argument when a `json` value does not parse.
std::string summary_json(const TrainingSummary& summary);
// Throws std::runtime_error naming the path when it cannot be written.
void write_summary(const std::string& path, const TrainingSummary& summary);

// The progress line: "round 120/937  loss 0.5123  1530 samples/s  ETA 0:53".
// On a terminal it is redrawn in place with \r (at most 10 times a second);
// otherwise a plain line is printed at the first update, then every
// `plain_interval_s` seconds, and at finish().
class ProgressLine {
 public:
  enum class Mode { automatic, terminal, plain, off };  // automatic: terminal if isatty(out)

  // `clock` returns seconds (steady); default: std::chrono::steady_clock.
  ProgressLine(int64_t total_rounds, Mode mode = Mode::automatic, std::FILE* out = stderr,
               std::function<double()> clock = {}, double plain_interval_s = 2.0);
  ~ProgressLine();

  // After `rounds_done` rounds and `samples_done` samples since the start.
  void update(int64_t rounds_done, double loss, int64_t samples_done);
  // Prints the last state (ends the terminal line). Idempotent.
  void finish();

  static std::string format(int64_t rounds_done, int64_t total_rounds, double loss,
                            double samples_per_s, double eta_s);

 private:
  void print(bool final_line);

  int64_t total_;
  Mode mode_;
  std::FILE* out_;
  std::function<double()> clock_;
  double interval_;
  double start_ = 0, last_print_ = -1e300;
  int64_t rounds_ = 0, samples_ = 0;
  double loss_ = 0;
  bool started_ = false, finished_ = false, dirty_ = false;
};

}  // namespace asteroid::compute
