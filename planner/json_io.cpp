#include "planner/json_io.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <optional>
#include <filesystem>
#include <set>
#include <sstream>

#include "compute/durable_file.h"
#include "planner/search.h"

namespace asteroid::planner {
namespace {

using nlohmann::json;

std::string type_name(const json& j) {
  if (j.is_number_integer() || j.is_number_unsigned()) return "an integer";
  if (j.is_number_float()) return "a number";
  return std::string("a ") + j.type_name();
}

// A field being read: knows its file and JSON path, so every error can name
// both. Children are made with at(name) / at(index).
class Field {
 public:
  Field(const json& j, const std::string& source, std::string path)
      : j_(j), source_(source), path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(source_ + ": " + (path_.empty() ? std::string("(top level)") : path_) +
                     ": " + what);
  }
  void expect(bool ok, const std::string& expected) const {
    if (!ok) fail("expected " + expected + ", got " + describe());
  }
  std::string describe() const {
    if (j_.is_number() || j_.is_boolean()) return type_name(j_) + " (" + j_.dump() + ")";
    if (j_.is_string()) return "a string (" + j_.dump() + ")";
    return type_name(j_);
  }

  const json& value() const { return j_; }
  const std::string& path() const { return path_; }
  const std::string& source() const { return source_; }

  bool has(const char* name) const { return j_.is_object() && j_.contains(name); }
  Field at(const char* name) const {
    expect(j_.is_object(), "an object");
    std::string child = path_.empty() ? std::string(name) : path_ + "." + name;
    auto it = j_.find(name);
    if (it == j_.end()) {
      Field(j_, source_, child).fail("missing field");
    }
    return Field(*it, source_, child);
  }
  Field at(size_t i) const { return Field(j_[i], source_, path_ + "[" + std::to_string(i) + "]"); }
  size_t array_size(bool non_empty, const std::string& what) const {
    expect(j_.is_array() && (!non_empty || !j_.empty()),
           non_empty ? "a non-empty array of " + what : "an array of " + what);
    return j_.size();
  }

  std::string string() const {
    expect(j_.is_string(), "a string");
    return j_.get<std::string>();
  }
  double number() const {
    expect(j_.is_number(), "a number");
    return j_.get<double>();
  }
  double non_negative() const {
    double v = number();
    if (!(v >= 0) || !std::isfinite(v)) fail("expected a number >= 0, got " + j_.dump());
    return v;
  }
  double positive() const {
    double v = number();
    if (!(v > 0) || !std::isfinite(v)) fail("expected a number > 0, got " + j_.dump());
    return v;
  }
  long long integer() const {
    bool ok = j_.is_number_integer() || j_.is_number_unsigned();
    if (!ok && j_.is_number_float()) {
      double d = j_.get<double>();
      ok = std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15;
    }
    expect(ok, "an integer");
    return j_.is_number_float() ? static_cast<long long>(j_.get<double>()) : j_.get<long long>();
  }
  int int_at_least(long long lo) const {
    long long v = integer();
    if (v < lo || v > 2147483647LL)
      fail("expected an integer >= " + std::to_string(lo) + ", got " + j_.dump());
    return static_cast<int>(v);
  }

 private:
  const json& j_;
  const std::string& source_;
  std::string path_;
};

bool valid_id(const std::string& id) {
  if (id.empty()) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string read_id(const Field& f) {
  std::string id = f.string();
  if (!valid_id(id)) f.fail("expected a device id matching [A-Za-z0-9_.-]+, got \"" + id + "\"");
  return id;
}

std::vector<double> read_times(const Field& f, size_t n) {
  size_t got = f.array_size(false, "times in ms");
  if (got != n)
    f.fail("expected " + std::to_string(n) + " times (one per profiled batch size), got " +
           std::to_string(got));
  std::vector<double> out(n);
  for (size_t k = 0; k < n; ++k) out[k] = f.at(k).non_negative();
  return out;
}

std::vector<std::vector<double>> read_table(const Field& f, size_t layers, size_t sizes) {
  size_t got = f.array_size(true, "per-layer rows");
  if (layers != 0 && got != layers)
    f.fail("expected " + std::to_string(layers) + " rows (one per layer), got " +
           std::to_string(got));
  std::vector<std::vector<double>> out(got);
  for (size_t l = 0; l < got; ++l) out[l] = read_times(f.at(l), sizes);
  return out;
}

// A codec name ("fp32", "fp16", "bf16", "int8", "int4").
Codec read_codec(const Field& f) {
  std::string name = f.string();
  std::optional<Codec> c = wire_codec::parse_codec(name);
  if (!c) f.fail("expected a codec name (fp32, fp16, bf16, int8 or int4), got \"" + name + "\"");
  return *c;
}

}  // namespace

// ---- cluster ------------------------------------------------------------------

Cluster cluster_from_json(const json& j, const std::string& source) {
  Field root(j, source, "");
  root.expect(j.is_object(), "a JSON object");
  Cluster c;
  Field devs = root.at("devices");
  size_t n = devs.array_size(true, "devices");
  std::set<std::string> ids;
  for (size_t i = 0; i < n; ++i) {
    Field d = devs.at(i);
    d.expect(d.value().is_object(), "a device object");
    Device dev;
    dev.id = read_id(d.at("id"));
    if (!ids.insert(dev.id).second) d.at("id").fail("duplicated device id \"" + dev.id + "\"");
    if (d.has("host")) dev.host = d.at("host").string();
    if (d.has("port")) {
      Field p = d.at("port");
      dev.port = p.int_at_least(0);
      if (dev.port > 65535) p.fail("expected a port in 0..65535, got " + p.value().dump());
    }
    dev.memory_mb = d.at("memory_mb").positive();
    if (d.has("emulate")) {
      Field e = d.at("emulate");
      e.expect(e.value().is_object(), "an object");
      Emulation em;
      if (e.has("cpu_share")) em.cpu_share = e.at("cpu_share").positive();
      if (e.has("device_class")) em.device_class = e.at("device_class").string();
      dev.emulate = em;
    }
    c.devices.push_back(std::move(dev));
  }
  if (root.has("default_bandwidth_mbps")) {
    c.default_bandwidth_mbps = root.at("default_bandwidth_mbps").positive();
  } else if (n > 1) {
    root.at("default_bandwidth_mbps");  // throws "missing field"
  }
  if (root.has("links")) {
    Field links = root.at("links");
    size_t m = links.array_size(false, "links");
    std::set<std::pair<std::string, std::string>> pairs;
    for (size_t i = 0; i < m; ++i) {
      Field l = links.at(i);
      l.expect(l.value().is_object(), "a link object");
      Link link;
      link.a = l.at("a").string();
      link.b = l.at("b").string();
      if (!ids.count(link.a)) l.at("a").fail("unknown device id \"" + link.a + "\" (not in devices)");
      if (!ids.count(link.b)) l.at("b").fail("unknown device id \"" + link.b + "\" (not in devices)");
      if (link.a == link.b) l.at("b").fail("a link joins two different devices, got \"" + link.b + "\" twice");
      link.bandwidth_mbps = l.at("bandwidth_mbps").positive();
      auto key = std::minmax(link.a, link.b);
      if (!pairs.insert({key.first, key.second}).second)
        l.fail("duplicated link between \"" + link.a + "\" and \"" + link.b + "\"");
      c.links.push_back(std::move(link));
    }
  }
  if (root.has("tls")) {
    Field tls = root.at("tls");
    tls.expect(tls.value().is_object(), "an object");
    c.tls_dir = tls.at("dir").string();
    if (c.tls_dir.empty()) tls.at("dir").fail("expected the folder of the cluster's certificates");
    if (tls.has("allow")) {
      Field allow = tls.at("allow");
      const size_t m = allow.array_size(false, "allow");
      for (size_t i = 0; i < m; ++i) c.tls_allow.push_back(allow.at(i).string());
    }
  }
  return c;
}

json cluster_to_json(const Cluster& c) {
  json devs = json::array();
  for (const Device& d : c.devices) {
    json o = {{"id", d.id}, {"memory_mb", d.memory_mb}};
    if (!d.host.empty()) o["host"] = d.host;
    if (d.port != 0) o["port"] = d.port;
    if (d.emulate) {
      json e = json::object();
      if (d.emulate->cpu_share) e["cpu_share"] = *d.emulate->cpu_share;
      if (d.emulate->device_class) e["device_class"] = *d.emulate->device_class;
      o["emulate"] = e;
    }
    devs.push_back(std::move(o));
  }
  json links = json::array();
  for (const Link& l : c.links)
    links.push_back({{"a", l.a}, {"b", l.b}, {"bandwidth_mbps", l.bandwidth_mbps}});
  json out = {{"devices", devs}, {"default_bandwidth_mbps", c.default_bandwidth_mbps}, {"links", links}};
  if (!c.tls_dir.empty()) {
    out["tls"] = {{"dir", c.tls_dir}};
    if (!c.tls_allow.empty()) out["tls"]["allow"] = c.tls_allow;
  }
  return out;
}

// ---- profile ------------------------------------------------------------------

Profile profile_from_json(const json& j, const std::string& source) {
  Field root(j, source, "");
  root.expect(j.is_object(), "a JSON object");
  Profile p;
  if (root.has("model")) p.model = root.at("model").string();
  Field layers = root.at("layers");
  size_t n = layers.array_size(true, "layers");
  for (size_t i = 0; i < n; ++i) {
    Field l = layers.at(i);
    l.expect(l.value().is_object(), "a layer object");
    LayerInfo info;
    if (l.has("name")) info.name = l.at("name").string();
    info.weight_bytes = l.at("weight_bytes").non_negative();
    info.out_bytes = l.at("out_bytes").non_negative();
    info.stash_bytes = l.at("stash_bytes").non_negative();
    p.layers.push_back(std::move(info));
  }
  Field devs = root.at("devices");
  devs.expect(devs.value().is_object() && !devs.value().empty(),
              "a non-empty object of device profiles keyed by device id");
  for (auto it = devs.value().begin(); it != devs.value().end(); ++it) {
    Field d(it.value(), source, devs.path() + "." + it.key());
    if (!valid_id(it.key())) d.fail("expected a device id matching [A-Za-z0-9_.-]+ as key");
    d.expect(d.value().is_object(), "a device profile object");
    DeviceProfile dp;
    Field batch = d.at("batch");
    size_t k = batch.array_size(true, "batch sizes");
    for (size_t i = 0; i < k; ++i) {
      Field b = batch.at(i);
      int v = b.int_at_least(1);
      if (!dp.batch.empty() && v <= dp.batch.back())
        b.fail("expected batch sizes strictly increasing, got " + std::to_string(v) +
               " after " + std::to_string(dp.batch.back()));
      dp.batch.push_back(v);
    }
    dp.fwd_ms = read_table(d.at("fwd_ms"), n, k);
    dp.bwd_ms = read_table(d.at("bwd_ms"), n, k);
    if (d.has("codecs")) {
      Field codecs = d.at("codecs");
      codecs.expect(codecs.value().is_object(), "an object of codec speeds keyed by codec name");
      for (auto c = codecs.value().begin(); c != codecs.value().end(); ++c) {
        Field speed(c.value(), source, codecs.path() + "." + c.key());
        std::optional<Codec> codec = wire_codec::parse_codec(c.key());
        if (!codec)
          speed.fail("expected a codec name (fp32, fp16, bf16, int8 or int4) as key, got \"" + c.key() + "\"");
        speed.expect(speed.value().is_object(), "an object {\"encode_mb_s\", \"decode_mb_s\"}");
        CodecSpeed cs;
        cs.encode_mb_s = speed.at("encode_mb_s").positive();
        cs.decode_mb_s = speed.at("decode_mb_s").positive();
        dp.codecs[*codec] = cs;
      }
    }
    if (d.has("update_ms")) {
      Field updates = d.at("update_ms");
      updates.expect(updates.value().is_object(), "an object of per-layer update times keyed by optimizer");
      for (auto u = updates.value().begin(); u != updates.value().end(); ++u) {
        Field times(u.value(), source, updates.path() + "." + u.key());
        std::optional<OptimizerKind> kind = find_named(kOptimizerNames, u.key());
        if (!kind)
          times.fail("expected an optimizer name (" + names_of(kOptimizerNames) + ") as key, got \"" + u.key() + "\"");
        if (times.array_size(false, "times in ms") != n)
          times.fail("expected " + std::to_string(n) + " times (one per layer), got " +
                     std::to_string(times.value().size()));
        std::vector<double>& row = dp.update_ms[*kind];
        for (size_t l = 0; l < n; ++l) row.push_back(times.at(l).non_negative());
      }
    }
    p.devices[it.key()] = std::move(dp);
  }
  return p;
}

json profile_to_json(const Profile& p) {
  json layers = json::array();
  for (const LayerInfo& l : p.layers)
    layers.push_back({{"name", l.name},
                      {"weight_bytes", l.weight_bytes},
                      {"out_bytes", l.out_bytes},
                      {"stash_bytes", l.stash_bytes}});
  json devs = json::object();
  for (const auto& [id, d] : p.devices) {
    devs[id] = {{"batch", d.batch}, {"fwd_ms", d.fwd_ms}, {"bwd_ms", d.bwd_ms}};
    if (!d.codecs.empty()) {
      json codecs = json::object();
      for (const auto& [c, speed] : d.codecs)
        codecs[wire_codec::codec_name(c)] = {{"encode_mb_s", speed.encode_mb_s}, {"decode_mb_s", speed.decode_mb_s}};
      devs[id]["codecs"] = codecs;
    }
    if (!d.update_ms.empty()) {
      json updates = json::object();
      for (const auto& [kind, times] : d.update_ms) updates[optimizer_name(kind)] = times;
      devs[id]["update_ms"] = updates;
    }
  }
  return {{"model", p.model}, {"layers", layers}, {"devices", devs}};
}

// ---- plan ---------------------------------------------------------------------

Plan plan_from_json(const json& j, const std::string& source) {
  Field root(j, source, "");
  root.expect(j.is_object(), "a JSON object");
  Plan plan;
  plan.strategy = root.has("strategy") ? root.at("strategy").string() : "custom";
  plan.batch = root.at("batch").int_at_least(1);
  plan.microbatches = root.at("microbatches").int_at_least(1);
  Field mbs = root.at("microbatch_size");
  plan.microbatch_size = mbs.int_at_least(1);
  if (static_cast<long long>(plan.microbatch_size) * plan.microbatches != plan.batch)
    mbs.fail("expected batch / microbatches = " + std::to_string(plan.batch) + " / " +
             std::to_string(plan.microbatches) + " (an exact division), got " +
             std::to_string(plan.microbatch_size));
  if (root.has("predicted_round_ms")) plan.predicted_round_ms = root.at("predicted_round_ms").non_negative();
  if (root.has("codec_block")) {
    Field block = root.at("codec_block");
    long long v = block.integer();
    if (v < 1 || v > static_cast<long long>(wire_codec::kMaxBlock))
      block.fail("expected an integer in [1, " + std::to_string(wire_codec::kMaxBlock) + "] (values per scale), got " +
                 block.value().dump());
    plan.codec_block = static_cast<uint32_t>(v);
  }
  Field stages = root.at("stages");
  size_t n = stages.array_size(true, "stages");
  std::set<std::string> seen;
  int next_begin = 0;
  for (size_t s = 0; s < n; ++s) {
    Field st = stages.at(s);
    st.expect(st.value().is_object(), "a stage object");
    Stage stage;
    Field layers = st.at("layers");
    layers.expect(layers.value().is_array() && layers.value().size() == 2,
                  "a layer range [begin, end)");
    stage.begin = layers.at(size_t{0}).int_at_least(0);
    stage.end = layers.at(size_t{1}).int_at_least(0);
    if (stage.begin != next_begin)
      layers.fail("expected the range to begin at layer " + std::to_string(next_begin) +
                  " (stages cover the layers in order), got " + std::to_string(stage.begin));
    if (stage.end <= stage.begin)
      layers.fail("expected end > begin, got [" + std::to_string(stage.begin) + ", " +
                  std::to_string(stage.end) + ")");
    next_begin = stage.end;
    Field devs = st.at("devices");
    size_t m = devs.array_size(true, "devices");
    long long sum = 0;
    for (size_t i = 0; i < m; ++i) {
      Field d = devs.at(i);
      d.expect(d.value().is_object(), "an object {\"id\", \"samples\"}");
      StageDevice sd;
      sd.id = read_id(d.at("id"));
      if (!seen.insert(sd.id).second)
        d.at("id").fail("device \"" + sd.id + "\" appears twice (groups are disjoint)");
      sd.samples = d.at("samples").int_at_least(1);
      sum += sd.samples;
      stage.devices.push_back(std::move(sd));
    }
    if (sum != plan.microbatch_size)
      devs.fail("expected samples adding up to microbatch_size " +
                std::to_string(plan.microbatch_size) + ", got " + std::to_string(sum));
    if (st.has("to_next_codec")) {
      Field f = st.at("to_next_codec");
      stage.to_next = read_codec(f);
      if (s + 1 == n && stage.to_next != Codec::fp32)
        f.fail("expected \"fp32\" or no field on the last stage (it sends nothing on), got \"" +
               std::string(wire_codec::codec_name(stage.to_next)) + "\"");
    }
    if (st.has("allreduce_codec")) stage.allreduce = read_codec(st.at("allreduce_codec"));
    plan.stages.push_back(std::move(stage));
  }
  if (root.has("idle_devices")) {
    Field idle = root.at("idle_devices");
    size_t m = idle.array_size(false, "device ids");
    for (size_t i = 0; i < m; ++i) {
      std::string id = read_id(idle.at(i));
      if (seen.count(id)) idle.at(i).fail("device \"" + id + "\" is both idle and in a stage");
      plan.idle_devices.push_back(id);
    }
  }
  return plan;
}

json plan_to_json(const Plan& plan) {
  json stages = json::array();
  for (const Stage& s : plan.stages) {
    json devs = json::array();
    for (const StageDevice& d : s.devices) devs.push_back({{"id", d.id}, {"samples", d.samples}});
    json st = {{"layers", {s.begin, s.end}}, {"devices", devs}};
    if (&s != &plan.stages.back()) st["to_next_codec"] = wire_codec::codec_name(s.to_next);
    st["allreduce_codec"] = wire_codec::codec_name(s.allreduce);
    stages.push_back(std::move(st));
  }
  json j = {{"strategy", plan.strategy},
            {"batch", plan.batch},
            {"microbatches", plan.microbatches},
            {"microbatch_size", plan.microbatch_size},
            {"predicted_round_ms", plan.predicted_round_ms},
            {"codec_block", plan.codec_block},
            {"stages", stages}};
  if (!plan.idle_devices.empty()) j["idle_devices"] = plan.idle_devices;
  return j;
}

// ---- cross-file checks ----------------------------------------------------------

void check_profile_covers(const Profile& profile, const Cluster& cluster, const std::string& source) {
  for (const Device& d : cluster.devices) {
    auto it = profile.devices.find(d.id);
    if (it == profile.devices.end())
      throw InputError(source + ": devices." + d.id + ": missing profile of cluster device \"" +
                       d.id + "\"");
    const DeviceProfile& dp = it->second;
    for (const char* name : {"fwd_ms", "bwd_ms"}) {
      const auto& table = std::string(name) == "fwd_ms" ? dp.fwd_ms : dp.bwd_ms;
      if (table.size() != profile.layers.size())
        throw InputError(source + ": devices." + d.id + "." + name + ": expected " +
                         std::to_string(profile.layers.size()) + " rows (one per layer), got " +
                         std::to_string(table.size()));
      for (size_t l = 0; l < table.size(); ++l)
        if (table[l].size() != dp.batch.size())
          throw InputError(source + ": devices." + d.id + "." + name + "[" + std::to_string(l) +
                           "]: expected " + std::to_string(dp.batch.size()) + " times, got " +
                           std::to_string(table[l].size()));
    }
  }
}

void check_plan(const Plan& plan, const Cluster& cluster, const Profile& profile,
                const std::string& source) {
  auto where = [&](size_t s, size_t i) {
    return source + ": stages[" + std::to_string(s) + "].devices[" + std::to_string(i) + "].id: ";
  };
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    const Stage& st = plan.stages[s];
    for (size_t i = 0; i < st.devices.size(); ++i) {
      const std::string& id = st.devices[i].id;
      if (cluster.index_of(id) < 0)
        throw InputError(where(s, i) + "unknown device id \"" + id + "\" (not in the cluster)");
      if (!profile.devices.count(id))
        throw InputError(where(s, i) + "device \"" + id + "\" has no profile");
    }
  }
  for (size_t i = 0; i < plan.idle_devices.size(); ++i)
    if (cluster.index_of(plan.idle_devices[i]) < 0)
      throw InputError(source + ": idle_devices[" + std::to_string(i) + "]: unknown device id \"" +
                       plan.idle_devices[i] + "\" (not in the cluster)");
  int layers = static_cast<int>(profile.layers.size());
  if (plan.stages.empty() || plan.stages.back().end != layers)
    throw InputError(source + ": stages[" + std::to_string(plan.stages.size() - 1) +
                     "].layers: expected the last stage to end at layer " + std::to_string(layers) +
                     " (the model's layer count), got " +
                     std::to_string(plan.stages.empty() ? 0 : plan.stages.back().end));
}

// ---- files --------------------------------------------------------------------

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot open the file for reading");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::parse_error& e) {
    throw InputError(path + ": (top level): expected JSON: " + e.what());
  }
}

std::vector<json> read_json_lines(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path);
  size_t number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (line.empty()) continue;
    try {
      out.push_back(json::parse(line));
    } catch (const json::parse_error& e) {
      throw InputError(path + ": line " + std::to_string(number) + ": expected JSON: " + e.what());
    }
  }
  return out;
}

void write_json_file(const json& j, const std::string& path) {
  compute::write_file_atomically(path, j.dump(2) + "\n", "JSON file");
}

Cluster load_cluster(const std::string& path) {
  Cluster c = cluster_from_json(read_json_file(path), path);
  // tls.dir is relative to the file.
  if (!c.tls_dir.empty()) c.tls_dir = (std::filesystem::path(path).parent_path() / c.tls_dir).lexically_normal().string();
  return c;
}
Profile load_profile(const std::string& path) { return profile_from_json(read_json_file(path), path); }
Plan load_plan(const std::string& path) { return plan_from_json(read_json_file(path), path); }
Plan load_plan(const std::string& path, const Cluster& cluster, const Profile& profile) {
  Plan plan = load_plan(path);
  check_plan(plan, cluster, profile, path);
  return plan;
}

void save_cluster(const Cluster& cluster, const std::string& path) {
  write_json_file(cluster_to_json(cluster), path);
}
void save_profile(const Profile& profile, const std::string& path) {
  write_json_file(profile_to_json(profile), path);
}
void save_plan(const Plan& plan, const std::string& path) { write_json_file(plan_to_json(plan), path); }
json plan_file_json(const Plan& plan, const json& extra) {
  json j = plan_to_json(plan);
  if (extra.is_object())
    for (auto it = extra.begin(); it != extra.end(); ++it)
      if (!j.contains(it.key())) j[it.key()] = it.value();
  return j;
}
void save_plan(const Plan& plan, const std::string& path, const json& extra) {
  write_json_file(plan_file_json(plan, extra), path);
}

nlohmann::json evaluation_to_json(const Evaluation& ev, OptimizerKind optimizer, double planning_ms) {
  using nlohmann::json;
  json steps = json::array();
  for (const StepTime& s : ev.steps) {
    json step = {{"kind", s.kind == StepKind::compute ? "compute" : "transfer"},
                 {"stage", s.stage},
                 {"ef_ms", s.ef_ms},
                 {"eb_ms", s.eb_ms},
                 {"ta_ms", s.ta_ms}};
    // The wire, where it is compressed (an exact plan's steps stay as they were).
    if (s.codec != Codec::fp32) {
      step["codec"] = wire_codec::codec_name(s.codec);
      if (s.kind == StepKind::transfer) {
        step["wire_bytes_per_sample"] = s.wire_bytes;
        step["codec_ef_ms"] = s.codec_ef_ms;
        step["codec_eb_ms"] = s.codec_eb_ms;
      } else {
        step["allreduce_wire_bytes"] = s.wire_bytes;
        step["codec_ta_ms"] = s.codec_ta_ms;
      }
    }
    steps.push_back(std::move(step));
  }
  json memory = json::array();
  for (const DeviceMemory& m : ev.memory)
    memory.push_back({{"id", m.id}, {"stage", m.stage}, {"used_bytes", m.used_bytes()},
                      {"capacity_bytes", m.capacity_bytes}});
  json extras = {{"optimizer", optimizer_name(optimizer)},
                 {"dominant_step", ev.dominant_step},
                 {"throughput_samples_per_s", ev.throughput * 1e3},
                 {"peak_memory_fraction", ev.peak_memory_fraction},
                 {"steps", steps},
                 {"memory", memory}};
  if (planning_ms >= 0) extras["planning_ms"] = planning_ms;
  if (!ev.warnings.empty()) extras["warnings"] = ev.warnings;
  return extras;
}

}  // namespace asteroid::planner
