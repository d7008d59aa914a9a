#include "apps/testbed/presets.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <stdexcept>

namespace asteroid::testbed {

const std::vector<DeviceClassInfo>& device_classes() {
  static const std::vector<DeviceClassInfo> classes = {
      {"nano", "Jetson Nano", 1.0, 4096},
      {"tx2", "Jetson TX2", 2.4, 8192},
      {"nx", "Jetson Xavier NX", 4.8, 8192},
  };
  return classes;
}

const DeviceClassInfo& device_class(const std::string& name) {
  for (const auto& c : device_classes())
    if (c.name == name) return c;
  throw std::invalid_argument("unknown device class '" + name + "': expected nano, tx2 or nx");
}

const std::vector<PresetInfo>& presets() {
  static const std::vector<PresetInfo> p = {
      {"A", "5 Nano-class devices (homogeneous, weak)", {{"nano", 5}}},
      {"B", "3 NX- and 2 TX2-class devices (strong)", {{"nx", 3}, {"tx2", 2}}},
      {"C", "1 NX, 2 TX2 and 3 Nano-class devices (mixed)", {{"nx", 1}, {"tx2", 2}, {"nano", 3}}},
      {"D", "1 TX2 and 3 Nano-class devices (weak, mixed)", {{"tx2", 1}, {"nano", 3}}},
  };
  return p;
}

double default_cpu_budget() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1) n = 1;
  return std::max(0.5, 0.75 * static_cast<double>(n));
}

std::vector<double> scale_cpu_shares(const std::vector<double>& speeds, double budget) {
  if (speeds.empty()) throw std::invalid_argument("scale_cpu_shares: no devices");
  if (!(budget > 0)) throw std::invalid_argument("scale_cpu_shares: budget must be > 0");
  double sum = 0, top = 0;
  for (double s : speeds) {
    if (!(s > 0)) throw std::invalid_argument("scale_cpu_shares: speeds must be > 0");
    sum += s;
    top = std::max(top, s);
  }
  double k = std::min(budget / sum, 1.0 / top);
  std::vector<double> shares;
  for (double s : speeds) shares.push_back(s * k);
  return shares;
}

namespace {
const PresetInfo& find_preset(const std::string& env) {
  std::string e = env;
  for (auto& ch : e) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  for (const auto& p : presets())
    if (p.env == e) return p;
  throw std::invalid_argument("unknown preset '" + env + "': expected one of A, B, C, D");
}
}  // namespace

planner::Cluster make_preset(const std::string& env, const PresetOptions& opts) {
  const PresetInfo& p = find_preset(env);
  if (!(opts.bandwidth_mbps > 0))
    throw std::invalid_argument("bandwidth must be > 0 Mbit/s, got " + std::to_string(opts.bandwidth_mbps));
  double budget = opts.cpu_budget_cores > 0 ? opts.cpu_budget_cores : default_cpu_budget();
  planner::Cluster c;
  c.default_bandwidth_mbps = opts.bandwidth_mbps;
  std::vector<double> speeds;
  for (const auto& [cls, count] : p.composition) {
    const DeviceClassInfo& info = device_class(cls);
    for (int i = 0; i < count; ++i) {
      planner::Device d;
      d.id = cls + "-" + std::to_string(i);
      d.memory_mb = info.memory_mb;
      d.emulate = planner::Emulation{};
      d.emulate->device_class = cls;
      c.devices.push_back(d);
      speeds.push_back(info.relative_speed);
    }
  }
  std::vector<double> shares = scale_cpu_shares(speeds, budget);
  for (size_t i = 0; i < shares.size(); ++i) {
    // Rounded to 1e-4 core so that cluster.json stays readable; ratios keep
    // 3+ significant digits.
    c.devices[i].emulate->cpu_share = std::round(shares[i] * 1e4) / 1e4;
  }
  return c;
}

std::string presets_table(const PresetOptions& opts) {
  double budget = opts.cpu_budget_cores > 0 ? opts.cpu_budget_cores : default_cpu_budget();
  std::string s;
  char line[256];
  std::snprintf(line, sizeof line, "CPU budget for the nodes: %.2f cores (relative speed Nano 1, TX2 2.4, NX 4.8)\n\n", budget);
  s += line;
  s += "| env | devices | CPU share per device (cores) | memory |\n|---|---|---|---|\n";
  for (const auto& p : presets()) {
    planner::Cluster c = make_preset(p.env, opts);
    std::string shares, mem, devs;
    for (const auto& [cls, count] : p.composition) {
      const auto& info = device_class(cls);
      if (!devs.empty()) devs += ", ";
      devs += std::to_string(count) + " " + info.label;
      for (const auto& d : c.devices)
        if (d.emulate->device_class == cls) {
          std::snprintf(line, sizeof line, "%s%s %.3f", shares.empty() ? "" : ", ", cls.c_str(),
                        *d.emulate->cpu_share);
          shares += line;
          std::snprintf(line, sizeof line, "%s%s %.0f GiB", mem.empty() ? "" : ", ", cls.c_str(),
                        info.memory_mb / 1024);
          mem += line;
          break;
        }
    }
    s += "| " + p.env + " | " + devs + " | " + shares + " | " + mem + " |\n";
  }
  return s;
}

}  // namespace asteroid::testbed
