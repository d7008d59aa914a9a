// Plain data of the planning problem (../docs/COST_MODEL.md, ../docs/FORMATS.md):
// the cluster, the per-layer profile and a plan. No Torch, no CAF: every
// other folder may include this header.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "messages/optimizer_kind.h"
#include "messages/wire_codec.h"

namespace asteroid::planner {

using wire_codec::Codec;

// How the local launcher makes a device slow or small on one machine
// (cluster.json "emulate"). All fields optional; absent means "as is".
struct Emulation {
  std::optional<double> cpu_share;  // fraction of one core, e.g. 0.25
  std::optional<std::string> device_class;  // "nano", "tx2", "nx" (informative)
};

struct Device {
  std::string id;
  std::string host;  // empty: planned for only, not run
  int port = 0;      // 0: planned for only
  double memory_mb = 0;
  std::optional<Emulation> emulate;
};

struct Link {
  std::string a, b;
  double bandwidth_mbps = 0;
};

struct Cluster {
  std::vector<Device> devices;
  double default_bandwidth_mbps = 1000;
  std::vector<Link> links;  // per-pair overrides, symmetric
  // Mutual TLS (docs/security.md): the folder of the cluster's certificates
  // (cluster.json's tls.dir, relative to the file; empty: plain TCP) and
  // who may join, "ID[=SHA256]" entries (tls.allow; empty: the devices'
  // ids, any certificate the authority issued them).
  std::string tls_dir;
  std::vector<std::string> tls_allow;

  // REQUIRES: a and b are ids of devices. Bandwidth between two distinct
  // devices in Mbit/s (the override if any, else the default).
  double bandwidth_mbps(const std::string& a, const std::string& b) const;
  // Index of the device with this id, or -1.
  int index_of(const std::string& id) const;
};

struct LayerInfo {
  std::string name;
  double weight_bytes = 0;  // parameter bytes
  double out_bytes = 0;     // output bytes of ONE sample
  double stash_bytes = 0;   // bytes per sample kept from forward to backward
};

// How fast a device encodes and decodes one wire codec, under its own CPU
// share: MB (1e6 bytes) of float32 values per second.
struct CodecSpeed {
  double encode_mb_s = 0;
  double decode_mb_s = 0;
};

struct DeviceProfile {
  std::vector<int> batch;                    // strictly increasing, >= 1
  std::vector<std::vector<double>> fwd_ms;   // [layer][k]
  std::vector<std::vector<double>> bwd_ms;   // [layer][k]
  // Measured codecs (profile.json "codecs"). A lossy codec is planned only
  // where every device on both ends of the link has its speed; fp32 needs
  // none (it is not encoded).
  std::map<Codec, CodecSpeed> codecs;
  // Measured optimizer updates (profile.json "update_ms"): per optimizer,
  // per layer, the time of one update of the layer's parameters and of
  // keeping the stage's new state (weights and optimizer state copied, as a
  // stage member does after every step). Absent: the simulator charges none.
  std::map<OptimizerKind, std::vector<double>> update_ms;  // [optimizer][layer]
};

struct Profile {
  std::string model;
  std::vector<LayerInfo> layers;
  std::map<std::string, DeviceProfile> devices;  // by device id
};

// The part of `cluster` that `profile` has tables for (its devices and the
// links between them, in the cluster's order): what a plan may use. A
// device that joins a running job without a profile is in the job's
// cluster but not in this part until its profile comes.
Cluster profiled_part(const Cluster& cluster, const Profile& profile);

struct StageDevice {
  std::string id;
  int samples = 0;  // y_d: samples of every micro-batch
};

struct Stage {
  int begin = 0, end = 0;  // layers [begin, end)
  std::vector<StageDevice> devices;
  Codec to_next = Codec::fp32;    // activations to the next stage and their gradients back
  Codec allreduce = Codec::fp32;  // the chunks of this group's ring all-reduce
};

struct Plan {
  std::string strategy = "hpp";  // hpp | dp | pp | single | custom
  int batch = 0;
  int microbatches = 1;
  int microbatch_size = 0;  // batch / microbatches
  double predicted_round_ms = 0;
  std::vector<Stage> stages;
  std::vector<std::string> idle_devices;  // devices the plan leaves unused
  uint32_t codec_block = wire_codec::kDefaultBlock;  // values per scale of int8/int4
};

using asteroid::OptimizerKind;
// k_opt of COST_MODEL.md: 0 for SGD, 1 for momentum, 2 for Adam.
int optimizer_state_factor(OptimizerKind o);

}  // namespace asteroid::planner
