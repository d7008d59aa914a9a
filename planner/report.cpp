#include "planner/report.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace asteroid::planner {
namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Left-aligned columns, padded to the widest cell.
std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size(); ++c) {
      if (width.size() <= c) width.push_back(0);
      width[c] = std::max(width[c], r[c].size());
    }
  std::ostringstream out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c) line += r[c] + std::string(width[c] + 2 - r[c].size(), ' ');
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << "\n";
  }
  return out.str();
}

}  // namespace

std::string explain_plan(const Plan& plan, const Evaluation& ev, double planning_ms) {
  std::ostringstream out;
  size_t used = 0;
  for (const Stage& s : plan.stages) used += s.devices.size();
  out << "plan: " << plan.strategy << ", batch " << plan.batch << " = " << plan.microbatches
      << " micro-batches x " << plan.microbatch_size << " samples, " << plan.stages.size()
      << (plan.stages.size() == 1 ? " stage, " : " stages, ") << used << " devices";
  if (!plan.idle_devices.empty()) {
    out << " (idle:";
    for (const std::string& id : plan.idle_devices) out << " " << id;
    out << ")";
  }
  out << "\n\n";
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"step", "stage", "layers", "devices (samples)", "Ef ms", "Eb ms", "Ta ms", "wire", "memory used"});
  size_t mem_index = 0;
  for (size_t i = 0; i < ev.steps.size(); ++i) {
    const StepTime& st = ev.steps[i];
    std::string mark = static_cast<int>(i) == ev.dominant_step ? "*" : "";
    if (st.kind == StepKind::compute) {
      const Stage& s = plan.stages[st.stage];
      std::string devs, mem;
      for (const StageDevice& d : s.devices) {
        devs += (devs.empty() ? "" : " ") + d.id + "(" + std::to_string(d.samples) + ")";
        const DeviceMemory& m = ev.memory[mem_index++];
        mem += (mem.empty() ? "" : " ") + m.id + " " + fmt("%.1f%%", 100 * m.fraction()) + (m.fits() ? "" : "!");
      }
      // The all-reduce's codec (and its encode + decode share of Ta).
      std::string wire;
      if (s.devices.size() > 1) {
        wire = std::string("all-reduce ") + wire_codec::codec_name(st.codec);
        if (st.codec != Codec::fp32) wire += " (codec " + fmt("%.3f", st.codec_ta_ms) + " ms)";
      }
      rows.push_back({std::to_string(i) + mark, std::to_string(st.stage),
                      "[" + std::to_string(s.begin) + ", " + std::to_string(s.end) + ")", devs,
                      fmt("%.3f", st.ef_ms), fmt("%.3f", st.eb_ms), fmt("%.3f", st.ta_ms), wire, mem});
    } else {
      // The boundary's codec, bytes per sample, and encode + decode share of Ef / Eb.
      std::string wire = std::string(wire_codec::codec_name(st.codec)) + " " + fmt("%.0f", st.wire_bytes) + " B/sample";
      if (st.codec != Codec::fp32)
        wire += " (codec " + fmt("%.3f", st.codec_ef_ms) + "/" + fmt("%.3f", st.codec_eb_ms) + " ms)";
      rows.push_back({std::to_string(i) + mark, std::to_string(st.stage) + "->" + std::to_string(st.stage + 1),
                      "", "transfer at " + fmt("%g", st.bandwidth_mbps) + " Mbit/s", fmt("%.3f", st.ef_ms),
                      fmt("%.3f", st.eb_ms), "", wire, ""});
    }
  }
  out << table(rows) << "\n";
  const StepTime& dm = ev.steps[ev.dominant_step];
  out << "dominant step: " << ev.dominant_step << " ("
      << (dm.kind == StepKind::compute ? "stage " + std::to_string(dm.stage)
                                       : "transfer " + std::to_string(dm.stage) + "->" + std::to_string(dm.stage + 1))
      << ")\n";
  out << "T_round: " << fmt("%.3f", ev.round_ms) << " ms, throughput: " << fmt("%.2f", ev.throughput * 1e3)
      << " samples/s\n";
  out << "memory: "
      << (ev.feasible ? "fits (peak " + fmt("%.1f", 100 * ev.peak_memory_fraction) + "%)"
                      : "DOES NOT FIT: " + ev.infeasible_reason)
      << "\n";
  if (plan.codec_block != wire_codec::kDefaultBlock) out << "codec block: " << plan.codec_block << " values per scale\n";
  for (const std::string& w : ev.warnings) out << "warning: " << w << "\n";
  if (planning_ms >= 0) out << "planning time: " << fmt("%.1f", planning_ms) << " ms\n";
  return out.str();
}

std::string explain_simulation(const Plan& plan, const Evaluation& ev, const Simulation& sim) {
  std::ostringstream out;
  out << "simulated round: " << fmt("%.3f", sim.round_ms) << " ms, cost model: " << fmt("%.3f", ev.round_ms)
      << " ms (simulated / model = " << fmt("%.3f", ev.round_ms > 0 ? sim.round_ms / ev.round_ms : 0) << ")\n";
  out << "bubble fraction: " << fmt("%.3f", sim.bubble_fraction) << "\n\n";
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"device", "stage", "busy ms", "all-reduce ms", "idle ms", "idle %"});
  for (const SimDevice& d : sim.devices)
    rows.push_back({d.id, std::to_string(d.stage), fmt("%.3f", d.busy_ms), fmt("%.3f", d.allreduce_ms),
                    fmt("%.3f", d.idle_ms), fmt("%.1f", sim.round_ms > 0 ? 100 * d.idle_ms / sim.round_ms : 0)});
  out << table(rows) << "\n" << format_grid(plan, sim);
  return out.str();
}

}  // namespace asteroid::planner
