// The paper's four environments (A-D) as emulated clusters on this machine.
//
// A preset keeps the devices' relative speeds exact (Nano 1, TX2 2.4, NX 4.8)
// and maps them onto a CPU budget of this machine: device d gets
//   cpu_share_d = speed_d * budget / sum(speeds)      (fraction of one core)
// so the whole cluster running flat out asks for `budget` cores, by default
// 3/4 of the cores (leaving the rest for the coordinator and the OS). No
// single device gets more than one core; if it would, all shares shrink
// together. The scale is per preset: an env-A Nano is faster than an env-C
// Nano in absolute terms, but within a cluster the ratios are the paper's.
#pragma once

#include <string>
#include <vector>

#include "planner/types.h"

namespace asteroid::testbed {

struct DeviceClassInfo {
  std::string name;      // "nano", "tx2", "nx" (cluster.json emulate.device_class)
  std::string label;     // "Jetson Nano" ...
  double relative_speed;  // Nano = 1
  double memory_mb;
};

// Nano, TX2, NX.
const std::vector<DeviceClassInfo>& device_classes();
// REQUIRES: name is one of device_classes(). Throws std::invalid_argument otherwise.
const DeviceClassInfo& device_class(const std::string& name);

struct PresetInfo {
  std::string env;  // "A".."D"
  std::string description;
  std::vector<std::pair<std::string, int>> composition;  // (class, count), fastest first
};

const std::vector<PresetInfo>& presets();

struct PresetOptions {
  double bandwidth_mbps = 1000;  // every link (the paper's fast setting; 100 = slow)
  double cpu_budget_cores = 0;   // <= 0: default_cpu_budget()
};

// 3/4 of the online cores (at least 0.5).
double default_cpu_budget();

// Shares (fraction of one core) proportional to `speeds`, summing to at most
// `budget`, none above 1. REQUIRES: speeds non-empty and positive, budget > 0.
std::vector<double> scale_cpu_shares(const std::vector<double>& speeds, double budget);

// The preset's devices (ids like "nx-0", "tx2-1", "nano-2"; memory of the
// class; emulate.cpu_share and device_class set), no host/port yet (the
// launcher fills them in). Throws std::invalid_argument naming the valid
// presets for an unknown env (case-insensitive) or a non-positive bandwidth.
planner::Cluster make_preset(const std::string& env, const PresetOptions& opts = {});

// A markdown table of the presets and their shares on this machine.
std::string presets_table(const PresetOptions& opts = {});

}  // namespace asteroid::testbed
