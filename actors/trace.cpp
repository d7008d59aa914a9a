#include "actors/trace.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>
#include <sstream>

namespace asteroid::actors {
namespace {

std::string name_of(const MemberNames& names, uint32_t stage, uint32_t member) {
  auto it = names.find({stage, member});
  return it != names.end() ? it->second : "stage" + std::to_string(stage) + "." + std::to_string(member);
}

bool is_op(const messages::TraceEvent& e) {
  return e.kind == messages::TraceKind::forward || e.kind == messages::TraceKind::backward;
}

std::string op_label(const messages::TraceEvent& e) {
  return std::to_string(e.stage) + (e.kind == messages::TraceKind::forward ? "F" : "B") + std::to_string(e.microbatch);
}

}  // namespace

std::string perfetto_json(const std::vector<messages::TraceEvent>& events, const MemberNames& names) {
  int64_t origin = std::numeric_limits<int64_t>::max();
  for (const auto& e : events) origin = std::min(origin, e.start_us);
  std::map<std::string, int> pids;  // device -> process id in the trace
  nlohmann::json out = nlohmann::json::array();
  for (const auto& e : events) {
    const std::string device = name_of(names, e.stage, e.member);
    auto [it, inserted] = pids.emplace(device, static_cast<int>(pids.size()) + 1);
    if (inserted) {
      out.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", it->second},
                     {"args", {{"name", device}}}});
    }
    std::string name = to_string(e.kind);
    if (is_op(e)) name = op_label(e);
    out.push_back({{"name", name},
                   {"cat", to_string(e.kind)},
                   {"ph", "X"},
                   {"ts", e.start_us - origin},
                   {"dur", std::max<int64_t>(e.end_us - e.start_us, 0)},
                   {"pid", it->second},
                   {"tid", e.stage * 100 + e.member},
                   {"args", {{"round", e.round}, {"microbatch", e.microbatch}, {"bytes", e.bytes}}}});
  }
  return nlohmann::json{{"traceEvents", out}, {"displayTimeUnit", "ms"}}.dump();
}

std::string step_grid(const std::vector<messages::TraceEvent>& events, uint64_t round, const MemberNames& names) {
  std::vector<messages::TraceEvent> ops;
  for (const auto& e : events) {
    if (e.round == round && is_op(e)) ops.push_back(e);
  }
  std::stable_sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.start_us < b.start_us; });
  // Each op goes into the first column after its row's previous op and after
  // every op that finished before it started, so dependencies read left to right.
  std::map<std::pair<uint32_t, uint32_t>, std::vector<std::string>> rows;
  std::vector<std::pair<int64_t, size_t>> finished;  // end time, column
  for (const auto& e : ops) {
    auto& row = rows[{e.stage, e.member}];
    size_t column = row.size();
    for (const auto& [end, col] : finished) {
      if (end <= e.start_us) column = std::max(column, col + 1);
    }
    row.resize(column + 1);
    row[column] = op_label(e);
    finished.push_back({e.end_us, column});
  }
  size_t width = 0;
  for (const auto& [key, row] : rows) width = std::max(width, row.size());
  std::ostringstream out;
  for (const auto& [key, row] : rows) {
    std::string label = name_of(names, key.first, key.second);
    label.resize(std::max<size_t>(label.size(), 10), ' ');
    out << label << " |";
    for (size_t c = 0; c < width; ++c) {
      std::string cell = c < row.size() ? row[c] : "";
      cell.resize(5, ' ');
      out << ' ' << cell;
    }
    out << '\n';
  }
  return out.str();
}

std::map<std::string, TimeBreakdown> time_breakdown(const std::vector<messages::TraceEvent>& events,
                                                    const MemberNames& names) {
  std::map<std::string, TimeBreakdown> out;
  std::map<std::string, std::pair<int64_t, int64_t>> span;
  for (const auto& e : events) {
    const std::string device = name_of(names, e.stage, e.member);
    TimeBreakdown& b = out[device];
    const double ms = static_cast<double>(e.end_us - e.start_us) / 1000.0;
    switch (e.kind) {
      case messages::TraceKind::forward:
      case messages::TraceKind::backward:
      case messages::TraceKind::optimizer_step: b.compute_ms += ms; break;
      case messages::TraceKind::send: b.send_ms += ms; break;
      case messages::TraceKind::all_reduce: b.all_reduce_ms += ms; break;
      default: break;
    }
    auto [it, inserted] = span.emplace(device, std::make_pair(e.start_us, e.end_us));
    if (!inserted) {
      it->second.first = std::min(it->second.first, e.start_us);
      it->second.second = std::max(it->second.second, e.end_us);
    }
  }
  for (auto& [device, b] : out) b.span_ms = static_cast<double>(span[device].second - span[device].first) / 1000.0;
  return out;
}

}  // namespace asteroid::actors
