// Reading and writing cluster.json, profile.json and plan.json
// (../docs/FORMATS.md). Every loader validates what it reads and answers a
// malformed file with an InputError whose message names the file, the field
// (a JSON path such as `stages[1].devices[0].samples`) and what was expected;
// unknown fields are ignored. Savers write pretty-printed JSON and throw
// std::runtime_error naming the path when the file cannot be written.
//
// Optional fields: cluster `host`, `port`, `emulate` (its `cpu_share` and
// `device_class` are kept), `links`, and `default_bandwidth_mbps` when there
// is a single device; profile `model`, layer `name` and device `codecs`
// ({"int8": {"encode_mb_s": 812.5, "decode_mb_s": 1400}, ...}: known codec
// names, speeds > 0); plan `strategy` ("custom" when absent),
// `predicted_round_ms`, `idle_devices`, `codec_block` (64 when absent) and
// each stage's `to_next_codec` and `allreduce_codec` (fp32 when absent;
// the last stage's to_next_codec may only be fp32). Plans are always
// written with the codec fields. Everything else FORMATS.md shows is
// required.
//
// Checks that need two files at once (a plan's device ids against the
// cluster, its layer ranges against the profile, the profile covering every
// device of the cluster) are the check_* functions below; the load_*
// overloads that take the other files call them.
#pragma once

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>
#include <vector>

#include "planner/cost_model.h"
#include "planner/types.h"

namespace asteroid::planner {

// Malformed input. what() is "<source>: <field>: <what was expected>".
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- whole files ----------------------------------------------------------

Cluster load_cluster(const std::string& path);
Profile load_profile(const std::string& path);
// The plan alone: structure, positive samples adding up to microbatch_size,
// batch = microbatches * microbatch_size, contiguous layer ranges from 0,
// no device twice.
Plan load_plan(const std::string& path);
// The plan checked against its cluster and profile as well (check_plan).
Plan load_plan(const std::string& path, const Cluster& cluster, const Profile& profile);

void save_cluster(const Cluster& cluster, const std::string& path);
void save_profile(const Profile& profile, const std::string& path);
void save_plan(const Plan& plan, const std::string& path);
// `extra` (a JSON object: per-step times, memory, dominant step, planning
// time...) is merged into the plan's object; the plan's own fields win.
void save_plan(const Plan& plan, const std::string& path, const nlohmann::json& extra);
// What that writes: the plan's object with `extra` merged in.
nlohmann::json plan_file_json(const Plan& plan, const nlohmann::json& extra);
// The `extra` of a plan file: the evaluation's per-step times, memory use,
// dominant step and throughput, the optimizer, and the planning time when
// it is >= 0.
nlohmann::json evaluation_to_json(const Evaluation& ev, OptimizerKind optimizer, double planning_ms = -1);

// ---- JSON values ------------------------------------------------------------
// `source` names where the value came from (a file path) in error messages.

nlohmann::json cluster_to_json(const Cluster& cluster);
nlohmann::json profile_to_json(const Profile& profile);
nlohmann::json plan_to_json(const Plan& plan);

Cluster cluster_from_json(const nlohmann::json& j, const std::string& source);
Profile profile_from_json(const nlohmann::json& j, const std::string& source);
Plan plan_from_json(const nlohmann::json& j, const std::string& source);

// ---- cross-file checks (throw InputError naming `source`) -------------------

// Every device of the cluster has a profile whose tables have one row per
// layer of the profile. `source` names the profile.
void check_profile_covers(const Profile& profile, const Cluster& cluster,
                          const std::string& source);
// Every device of the plan is in the cluster and profiled, the stages end at
// the profile's last layer, idle devices are known. `source` names the plan.
void check_plan(const Plan& plan, const Cluster& cluster, const Profile& profile,
                const std::string& source);

// ---- raw files --------------------------------------------------------------

// Parses a JSON file; InputError naming the path when it is missing or not JSON.
nlohmann::json read_json_file(const std::string& path);
// The values of a JSON-lines log (metrics.jsonl, faults.jsonl), one per
// non-empty line; none when the file does not exist (nothing logged yet);
// InputError naming the path and line for a line that is not JSON.
std::vector<nlohmann::json> read_json_lines(const std::string& path);
// Writes `j` pretty-printed, atomically (compute/durable_file.h);
// std::runtime_error naming the path on failure.
void write_json_file(const nlohmann::json& j, const std::string& path);

}  // namespace asteroid::planner
