#include "compute/training_log.h"

#include "compute/durable_file.h"

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace asteroid::compute {
namespace {

std::FILE* open_for_writing(const std::string& path, const std::string& what, bool append = false) {
  std::FILE* f = std::fopen(path.c_str(), append ? "a" : "w");
  if (f == nullptr)
    throw std::runtime_error("cannot write " + what + " '" + path + "': " + std::strerror(errno));
  return f;
}

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// JSON has no NaN or infinity: write null for them.
nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

// Extra fields: whole numbers (counts, sizes) as integers.
nlohmann::json extra_number(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9007199254740992.0)
    return nlohmann::json(static_cast<int64_t>(v));
  return number(v);
}

}  // namespace

void check_writable(const std::string& path, const std::string& what) {
  std::fclose(open_for_writing(path, what));
}

MetricsWriter::MetricsWriter(const std::string& path, bool append) : path_(path) {
  if (!path.empty()) file_ = open_for_writing(path, "metrics file", append);
}

MetricsWriter::~MetricsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

std::string MetricsWriter::to_json_line(const RoundRecord& r) {
  // Fields in a fixed order: round, loss, samples, ms, then the extras by name.
  nlohmann::ordered_json j;
  j["round"] = r.round;
  j["loss"] = number(r.loss);
  j["samples"] = r.samples;
  j["ms"] = number(r.ms);
  for (const auto& [k, v] : r.extra) j[k] = extra_number(v);
  return j.dump();
}

void MetricsWriter::write(const RoundRecord& record) { write_line(to_json_line(record)); }

void MetricsWriter::write_line(const std::string& json_object) {
  if (file_ == nullptr) return;
  const std::string line = json_object + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    throw std::runtime_error("cannot write metrics file '" + path_ + "': " + std::strerror(errno));
}

std::string summary_json(const TrainingSummary& s) {
  nlohmann::ordered_json j;
  j["test_accuracy"] = number(s.test_accuracy);
  j["samples_per_s"] = number(s.samples_per_s);
  j["rounds"] = s.rounds;
  for (const auto& [k, v] : s.numbers) j[k] = extra_number(v);
  for (const auto& [k, v] : s.strings) j[k] = v;
  for (const auto& [k, v] : s.json) {
    try {
      j[k] = nlohmann::ordered_json::parse(v);
    } catch (const nlohmann::json::exception& e) {
      throw std::invalid_argument("summary field '" + k + "' is not JSON: " + e.what());
    }
  }
  return j.dump(2);
}

void write_summary(const std::string& path, const TrainingSummary& summary) {
  write_file_atomically(path, summary_json(summary) + "\n", "summary file");
}

ProgressLine::ProgressLine(int64_t total_rounds, Mode mode, std::FILE* out,
                           std::function<double()> clock, double plain_interval_s)
    : total_(total_rounds),
      mode_(mode),
      out_(out),
      clock_(clock ? std::move(clock) : std::function<double()>(steady_seconds)),
      interval_(plain_interval_s) {
  if (mode_ == Mode::automatic) mode_ = (out_ && isatty(fileno(out_))) ? Mode::terminal : Mode::plain;
  if (out_ == nullptr) mode_ = Mode::off;
  start_ = clock_();
}

ProgressLine::~ProgressLine() {
  // Leave the terminal on a fresh line; never throw from here.
  if (mode_ == Mode::terminal && started_ && !finished_) std::fputc('\n', out_);
}

std::string ProgressLine::format(int64_t rounds_done, int64_t total_rounds, double loss,
                                 double samples_per_s, double eta_s) {
  char eta[32];
  if (std::isfinite(eta_s) && eta_s >= 0) {
    const int64_t t = static_cast<int64_t>(std::llround(eta_s));
    if (t >= 3600)
      std::snprintf(eta, sizeof eta, "%lld:%02lld:%02lld", (long long)(t / 3600),
                    (long long)(t / 60 % 60), (long long)(t % 60));
    else
      std::snprintf(eta, sizeof eta, "%lld:%02lld", (long long)(t / 60), (long long)(t % 60));
  } else {
    std::snprintf(eta, sizeof eta, "?");
  }
  char line[160];
  std::snprintf(line, sizeof line, "round %lld/%lld  loss %.4f  %.0f samples/s  ETA %s",
                (long long)rounds_done, (long long)total_rounds, loss, samples_per_s, eta);
  return line;
}

void ProgressLine::print(bool final_line) {
  const double elapsed = clock_() - start_;
  const double rate = elapsed > 0 ? samples_ / elapsed : 0;
  const double eta = rounds_ > 0 ? elapsed / rounds_ * double(total_ - rounds_) : NAN;
  const std::string text = format(rounds_, total_, loss_, rate, final_line ? 0.0 : eta);
  if (mode_ == Mode::terminal)
    std::fprintf(out_, "\r%s\x1b[K%s", text.c_str(), final_line ? "\n" : "");
  else
    std::fprintf(out_, "%s\n", text.c_str());
  std::fflush(out_);
  dirty_ = false;
}

void ProgressLine::update(int64_t rounds_done, double loss, int64_t samples_done) {
  if (mode_ == Mode::off || finished_) return;
  rounds_ = rounds_done;
  loss_ = loss;
  samples_ = samples_done;
  dirty_ = true;
  const double now = clock_();
  const double min_gap = mode_ == Mode::terminal ? 0.1 : interval_;
  if (!started_ || now - last_print_ >= min_gap) {
    started_ = true;
    last_print_ = now;
    print(false);
  }
}

void ProgressLine::finish() {
  if (mode_ == Mode::off || finished_) return;
  if (started_ && (dirty_ || mode_ == Mode::terminal)) print(true);
  finished_ = true;
}

}  // namespace asteroid::compute
