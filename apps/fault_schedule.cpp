#include "apps/fault_schedule.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include "apps/testbed/emulated_cluster.h"
#include "planner/cost_model.h"

namespace asteroid::apps {
namespace {

const std::set<std::string> kActions = {"kill", "freeze", "thaw", "slow", "restore", "cut-link", "heal-link", "restart"};

std::string number_text(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string Fault::describe() const {
  std::string when = round ? "round " + std::to_string(*round) : "after " + number_text(*after_s) + " s";
  if (on_recovery) when = "recovery from round " + std::to_string(*round) + " on";
  std::string what = action + " " + device;
  if (action == "slow") what += " x" + number_text(factor);
  if (action == "cut-link" || action == "heal-link") what += " " + peer;
  return when + ": " + what;
}

std::vector<Fault> faults_from_json(const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(source + ": not JSON: " + e.what());
  }
  if (j.is_object() && j.contains("faults")) j = j["faults"];
  if (!j.is_array())
    throw std::invalid_argument(source + ": expected a JSON array of faults (or {\"faults\": [...]})");
  std::vector<Fault> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const nlohmann::json& e = j[i];
    const std::string where = source + ": faults[" + std::to_string(i) + "]";
    auto bad = [&](const std::string& what) { return std::invalid_argument(where + ": " + what); };
    if (!e.is_object()) throw bad("expected an object such as {\"round\": 40, \"action\": \"kill\", \"device\": \"nano-1\"}");
    Fault f;
    f.index = i;
    const bool has_round = e.contains("round"), has_after = e.contains("after_s");
    if (has_round == has_after) throw bad("expected exactly one of \"round\" and \"after_s\"");
    if (has_round) {
      const auto& r = e["round"];
      if (!r.is_number_integer() || r.get<int64_t>() < 0)
        throw bad("\"round\" must be a non-negative integer, got " + r.dump());
      f.round = r.get<uint64_t>();
    } else {
      const auto& a = e["after_s"];
      if (!a.is_number() || !std::isfinite(a.get<double>()) || a.get<double>() < 0)
        throw bad("\"after_s\" must be a non-negative number of seconds, got " + a.dump());
      f.after_s = a.get<double>();
    }
    if (e.contains("when")) {
      if (e["when"] != "recovery") throw bad("\"when\" must be \"recovery\", got " + e["when"].dump());
      if (!has_round) throw bad("\"when\": \"recovery\" needs \"round\" (the first round it may come in)");
      f.on_recovery = true;
    }
    if (!e.contains("action") || !e["action"].is_string())
      throw bad("\"action\" must be one of kill, freeze, thaw, slow, restore, cut-link, heal-link, restart");
    f.action = e["action"].get<std::string>();
    if (!kActions.count(f.action))
      throw bad("\"action\" must be one of kill, freeze, thaw, slow, restore, cut-link, heal-link, restart, got '" + f.action +
                "'");
    if (!e.contains("device") || !e["device"].is_string() || e["device"].get<std::string>().empty())
      throw bad("\"device\" must be a device id (a string)");
    f.device = e["device"].get<std::string>();
    if (f.alias() && !has_round) throw bad("an alias device ('" + f.device + "') needs \"round\"");
    if (f.action == "slow") {
      if (!e.contains("factor") || !e["factor"].is_number() || !(e["factor"].get<double>() > 0) ||
          !std::isfinite(e["factor"].get<double>()))
        throw bad("\"slow\" needs \"factor\", a number > 0 (the CPU share is divided by it; 1 restores)");
      f.factor = e["factor"].get<double>();
    }
    if (f.action == "cut-link" || f.action == "heal-link") {
      if (!e.contains("peer") || !e["peer"].is_string() || e["peer"].get<std::string>().empty())
        throw bad("\"" + f.action + "\" needs \"peer\": a device id, \"hub\" (the coordinator) or \"*\" (everything)");
      f.peer = e["peer"].get<std::string>();
    }
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<Fault> load_faults(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot read the fault schedule '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  return faults_from_json(text.str(), path);
}

void check_faults(const std::vector<Fault>& faults, const planner::Cluster& cluster, const std::string& source) {
  auto known = [&](const std::string& id) { return cluster.index_of(id) >= 0; };
  std::string ids;
  for (const auto& d : cluster.devices) ids += (ids.empty() ? "" : ", ") + d.id;
  for (const Fault& f : faults) {
    const std::string where = source + ": faults[" + std::to_string(f.index) + "]";
    if (!f.alias() && !known(f.device))
      throw std::invalid_argument(where + ": unknown device '" + f.device + "' (the cluster has " + ids + ")");
    if (!f.peer.empty() && f.peer != "hub" && f.peer != "*" && f.peer[0] != '?' && !known(f.peer))
      throw std::invalid_argument(where + ": unknown peer '" + f.peer + "' (a device id, hub or *; the cluster has " +
                                  ids + ")");
  }
}

namespace {

// Every stage of `plan` keeps a member, or (a single-device stage) its
// replica holder, when `victim` and the devices in `down` are gone.
bool safe_to_lose(const planner::Plan& plan, const std::set<std::string>& down, const std::string& victim) {
  auto gone = [&](const std::string& d) { return d == victim || down.count(d) > 0; };
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    const auto& members = plan.stages[s].devices;
    if (std::any_of(members.begin(), members.end(), [&](const planner::StageDevice& m) { return !gone(m.id); }))
      continue;
    const auto holder = members.size() == 1 ? planner::replica_holder(plan, static_cast<int>(s)) : std::nullopt;
    if (!holder || gone(*holder)) return false;
  }
  return true;
}

// The stage of `device` in `plan`, or -1.
int stage_of(const planner::Plan& plan, const std::string& device) {
  for (size_t s = 0; s < plan.stages.size(); ++s)
    for (const auto& m : plan.stages[s].devices)
      if (m.id == device) return static_cast<int>(s);
  return -1;
}

}  // namespace

std::optional<std::string> pick_safe_device(const planner::Plan& plan, const std::vector<std::string>& devices,
                                            const std::set<std::string>& down, uint64_t key) {
  std::vector<std::string> used, idle;
  for (const auto& d : devices) {
    if (down.count(d) || !safe_to_lose(plan, down, d)) continue;
    (stage_of(plan, d) >= 0 ? used : idle).push_back(d);
  }
  const auto& pool = used.empty() ? idle : used;
  if (pool.empty()) return std::nullopt;
  return pool[key % pool.size()];
}

std::optional<std::string> pick_safe_neighbour(const planner::Plan& plan, const std::string& device,
                                               const std::set<std::string>& down, uint64_t key) {
  const int at = stage_of(plan, device);
  if (at < 0) return std::nullopt;
  std::vector<std::string> pool;
  for (int s = std::max(at - 1, 0); s <= std::min(at + 1, static_cast<int>(plan.stages.size()) - 1); ++s) {
    for (const auto& m : plan.stages[static_cast<size_t>(s)].devices) {
      if (m.id != device && !down.count(m.id) && safe_to_lose(plan, down, m.id)) pool.push_back(m.id);
    }
  }
  if (pool.empty()) return std::nullopt;
  return pool[key % pool.size()];
}

FaultInjector::FaultInjector(testbed::EmulatedCluster& owner, std::vector<Fault> faults, const std::string& log_path,
                             std::function<void(const std::string&)> announce)
    : owner_(owner), faults_(std::move(faults)), done_(faults_.size(), false), announce_(std::move(announce)) {
  log_ = std::fopen(log_path.c_str(), "w");
  if (!log_) throw std::runtime_error("cannot write the fault log '" + log_path + "'");
}

FaultInjector::~FaultInjector() {
  try {
    finish();
  } catch (...) {
  }
  if (log_) std::fclose(log_);
}

void FaultInjector::inject(testbed::EmulatedCluster& cluster, const Fault& f) {
  std::string error;
  const auto t = std::chrono::steady_clock::now();
  try {
    if (f.action == "kill") cluster.inject_kill(f.device);
    else if (f.action == "freeze") cluster.inject_freeze(f.device);
    else if (f.action == "thaw") cluster.inject_thaw(f.device);
    else if (f.action == "slow") cluster.inject_slow(f.device, f.factor);
    else if (f.action == "restore") cluster.inject_slow(f.device, 1);
    else if (f.action == "cut-link") cluster.inject_cut_link(f.device, f.peer);
    else if (f.action == "heal-link") cluster.inject_heal_link(f.device, f.peer);
    else if (f.action == "restart") cluster.inject_restart(f.device);
  } catch (const std::exception& e) {
    error = e.what();
  }
  nlohmann::json line = {{"t_s", std::chrono::duration<double>(t - t0_).count()},
                         {"unix_s", unix_seconds()},
                         {"round", round_.load()},
                         {"action", f.action},
                         {"device", f.device},
                         {"entry", f.index},
                         {"ok", error.empty()}};
  if (f.round) line["at_round"] = *f.round;
  if (f.after_s) line["after_s"] = *f.after_s;
  if (f.action == "slow") line["factor"] = f.factor;
  if (!f.peer.empty()) line["peer"] = f.peer;
  if (!error.empty()) line["error"] = error;
  if (f.on_recovery) line["when"] = "recovery";
  log_line(line);
  ++injected_;
  if (announce_) announce_("fault " + f.describe() + (error.empty() ? "" : " FAILED: " + error));
}

void FaultInjector::log_line(const nlohmann::json& line) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::fprintf(log_, "%s\n", line.dump().c_str());
  std::fflush(log_);
}

void FaultInjector::inject_due(size_t i, const planner::Plan& plan, const std::set<std::string>& failing) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (done_[i]) return;
    done_[i] = true;
  }
  Fault f = faults_[i];
  // Only a fault that takes a device away picks one for an alias; a restore
  // of an alias never taken is skipped.
  const bool takes = f.action == "kill" || f.action == "freeze" || f.action == "cut-link" || f.action == "slow";
  std::set<std::string> down = down_;
  down.insert(failing.begin(), failing.end());
  auto resolve = [&](const std::string& alias, const std::function<std::optional<std::string>(uint64_t)>& pick) {
    auto known = aliases_.find(alias);
    if (known == aliases_.end()) {
      uint64_t key = 1469598103934665603ull;  // FNV-1a of the alias
      for (unsigned char c : alias) key = (key ^ c) * 1099511628211ull;
      known = aliases_.emplace(alias, takes ? pick(key).value_or("") : "").first;
    }
    return known->second;
  };
  auto skip = [&](const std::string& why) {
    log_line({{"round", round_.load()}, {"action", f.action}, {"device", f.device}, {"entry", f.index},
              {"ok", false}, {"error", "skipped: " + why}});
  };
  if (f.alias()) {
    std::vector<std::string> ids;
    for (const auto& d : owner_.cluster().devices) ids.push_back(d.id);
    const std::string device = resolve(f.device, [&](uint64_t key) { return pick_safe_device(plan, ids, down, key); });
    if (device.empty()) return skip("no device can be taken away safely for this alias");
    f.device = device;
  }
  if (!f.peer.empty() && f.peer[0] == '?') {
    const std::string peer =
        resolve(f.peer, [&](uint64_t key) { return pick_safe_neighbour(plan, f.device, down, key); });
    if (peer.empty()) return skip("no pipeline neighbour of " + f.device + " can be cut off safely for this alias");
    f.peer = peer;
  }
  inject(owner_, f);
  if (f.action == "kill" || f.action == "freeze" || (f.action == "cut-link" && (f.peer == "hub" || f.peer == "*")))
    down_.insert(f.device);
  if (f.action == "restart" || f.action == "thaw" || (f.action == "heal-link" && (f.peer == "hub" || f.peer == "*")))
    down_.erase(f.device);
}

void FaultInjector::on_failure(const planner::Plan& plan, const std::vector<std::string>& failing) {
  const std::set<std::string> now(failing.begin(), failing.end());
  for (size_t i = 0; i < faults_.size(); ++i) {
    if (faults_[i].on_recovery && *faults_[i].round <= round_) inject_due(i, plan, now);
  }
}

void FaultInjector::before_round(uint64_t round, const planner::Plan& plan) {
  round_ = round;
  bool start_timer = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!started_) {
      started_ = true;
      t0_ = std::chrono::steady_clock::now();
      start_timer = std::any_of(faults_.begin(), faults_.end(), [](const Fault& f) { return f.after_s.has_value(); });
    }
  }
  if (start_timer) timer_ = std::thread([this] { timer_loop(); });
  for (size_t i = 0; i < faults_.size(); ++i) {
    const Fault& f = faults_[i];
    if (f.round && *f.round == round && !f.on_recovery) inject_due(i, plan, {});
  }
}

void FaultInjector::timer_loop() {
  // Its own handle: a handle is not shared between threads.
  testbed::EmulatedCluster cluster = testbed::EmulatedCluster::attach(owner_.dir());
  std::vector<size_t> order;
  for (size_t i = 0; i < faults_.size(); ++i)
    if (faults_[i].after_s) order.push_back(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return *faults_[a].after_s < *faults_[b].after_s; });
  for (size_t i : order) {
    const auto due = t0_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(*faults_[i].after_s));
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait_until(lock, due, [&] { return stop_; });
      if (stop_) return;
      done_[i] = true;
    }
    inject(cluster, faults_[i]);
  }
}

void FaultInjector::finish() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    finished_ = true;
    stop_ = true;
  }
  wake_.notify_all();
  if (timer_.joinable()) timer_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  for (size_t i = 0; i < faults_.size(); ++i) {
    if (done_[i]) continue;
    nlohmann::json line = {{"action", faults_[i].action}, {"device", faults_[i].device}, {"entry", faults_[i].index},
                           {"ok", false},
                           {"error", faults_[i].on_recovery ? "not reached: no failure came from its round on"
                                                            : "not reached: training ended first"}};
    if (faults_[i].round) line["at_round"] = *faults_[i].round;
    if (faults_[i].after_s) line["after_s"] = *faults_[i].after_s;
    std::fprintf(log_, "%s\n", line.dump().c_str());
  }
  std::fflush(log_);
}

}  // namespace asteroid::apps
