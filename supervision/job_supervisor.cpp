#include "supervision/job_supervisor.h"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>

#include "actors/optimizer_spec.h"
#include "actors/planner_actor.h"
#include "compute/torchscript_model.h"
#include "messages/enum_names.h"
#include "messages/transport.h"
#include "planner/json_io.h"
#include "planner/latency_predictor.h"
#include "planner/replan.h"
#include "supervision/checkpoint.h"
#include "supervision/heartbeat_monitor.h"
#include "supervision/job_supervisor_impl.h"
#include "supervision/stage_states.h"

namespace asteroid::supervision {
planner::Profile uniform_profile(const std::vector<planner::LayerInfo>& layers, const planner::Cluster& cluster) {
  planner::Profile profile;
  profile.model = kUniformProfile;
  profile.layers = layers;
  for (const auto& device : cluster.devices) {
    planner::DeviceProfile d;
    d.batch = {1, 64};
    for (size_t l = 0; l < layers.size(); ++l) {
      d.fwd_ms.push_back({0.01, 0.64});
      d.bwd_ms.push_back({0.02, 1.28});
    }
    profile.devices[device.id] = d;
  }
  return profile;
}

// A checkpoint is of a committed round: the coordinator commits the rounds
// a checkpoint falls due after as soon as they are stepped, whatever the
// pacing of replication.
actors::JobSpec with_commit_points(actors::JobSpec spec, const SupervisionOptions& options) {
  if (options.checkpoint_every > 0) spec.commit_every = options.checkpoint_every;
  return spec;
}

std::string summary_of(const planner::Plan& plan) {
  std::string out;
  for (const auto& stage : plan.stages) {
    if (!out.empty()) out += " | ";
    out += "[" + std::to_string(stage.begin) + "," + std::to_string(stage.end) + ") ";
    for (size_t i = 0; i < stage.devices.size(); ++i) {
      out += (i ? "+" : "") + stage.devices[i].id + ":" + std::to_string(stage.devices[i].samples);
    }
  }
  return out;
}

std::string JobSupervisor::Impl::status() const {
  nlohmann::json out = nlohmann::json::parse(coordinator.status());
  out["phase"] = phase;
  if (!step.empty()) out["step"] = step;
  if (phase == "recovering") out["recovery"] = {{"round", recovering_round}, {"cause", recovering_from}};
  out["failures"] = failures.size();
  nlohmann::json heartbeats = nlohmann::json::object();
  {
    const std::lock_guard<std::mutex> lock(round_trips->mutex);
    for (const auto& [device, d] : round_trips->devices)
      heartbeats[device] = {{"last_ms", d.last_ms}, {"sum_ms", d.sum_ms}, {"count", d.count}};
  }
  out["heartbeat_round_trips"] = heartbeats;
  out["device_scale"] = speed.estimates();
  return out.dump();
}

void JobSupervisor::Impl::start(uint64_t first_round, const std::vector<messages::StageState>& states) {
  started = std::chrono::steady_clock::now();
  enter("deploying");
  planner = actors::spawn_planner(coordinator.mailbox(), coordinator.spec().cluster, options.planner_on,
                                  coordinator.spec().connect_timeout);
  const auto deploy_started = std::chrono::steady_clock::now();
  coordinator.deploy(first_round, states);
  switch_costs.set_unknown_join_ms(
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - deploy_started).count());
  speed_spells.started(first_round);
  MonitorSetup setup;
  setup.options = options.heartbeat;
  setup.reconnect_every = options.reconnect_every;
  setup.listener = coordinator.inbox();
  setup.nodes = coordinator.node_actors();
  // Reconnection is tried for the devices of the plan (once lost) and for
  // the devices the job could not reach at the start (new ones may come);
  // a reachable device the plan leaves idle stays idle.
  for (const auto& device : coordinator.spec().cluster.devices) {
    if (device.host.empty() || device.port <= 0) continue;
    setup.endpoints[device.id] = device;  // heartbeat datagrams go there
    if (!setup.nodes.count(device.id)) {
      try {
        coordinator.reconnect(device.id, kAdmissionConnectTimeout);
        continue;
      } catch (const actors::JobError&) {
        awaited.insert(device.id);
      }
    }
    setup.addresses[device.id] = device;
  }
  setup.nodes = coordinator.node_actors();
  setup.on_round_trip = [trips = round_trips](const std::string& device, std::chrono::microseconds rtt) {
    const std::lock_guard<std::mutex> lock(trips->mutex);
    auto& d = trips->devices[device];
    d.last_ms = rtt.count() / 1e3;
    d.sum_ms += d.last_ms;
    ++d.count;
  };
  monitor = spawn_heartbeat_monitor(system, setup);
  enter("training");
}

std::vector<actors::RoundReport> JobSupervisor::Impl::run_round() {
  std::vector<actors::RoundReport> reports = admit_returned();
  for (auto& report : adapt()) reports.push_back(std::move(report));
  for (;;) {
    if (auto committed = attempt([&] { return coordinator.run_round(); })) {
      reports.insert(reports.end(), committed->begin(), committed->end());
      return reports;
    }
  }
}

std::vector<actors::RoundReport> JobSupervisor::Impl::flush() {
  return attempt([&] { return coordinator.flush(); }).value_or(std::vector<actors::RoundReport>{});
}

void JobSupervisor::Impl::after_commits(const std::vector<actors::RoundReport>& reports) {
  if (reports.empty()) return;
  recoveries = 0;  // progress: the limit is on recoveries in a row
  for (auto& failure : failures) {
    if (failure.recovered_s < 0) failure.recovered_s = now_s();
  }
  watch_speed(reports);
  publish();
  // A checkpoint is due after every `checkpoint_every` rounds. When rounds
  // commit together (the pipelined commit), it is taken at the last of
  // them: the stages hold only their last committed state.
  if (options.checkpoint_every > 0 && coordinator.last_committed()) {
    bool due = checkpoint_owed;
    for (const auto& report : reports) due |= (report.round + 1) % options.checkpoint_every == 0;
    if (due) {
      checkpoint_owed = true;  // until written: a device lost while its state is fetched defers it
      enter("checkpointing");
      write_checkpoint_at(*coordinator.last_committed());
      checkpoint_owed = false;
      enter("training");
    }
  }
}

std::map<std::string, double> JobSupervisor::Impl::predicted_compute_ms(const planner::Plan& plan,
                                                                      const planner::Profile& profile) const {
  std::map<std::string, double> predicted;
  try {
    const auto ev = planner::evaluate(plan, planner::profiled_part(coordinator.spec().cluster, profile), profile,
                                      {options.optimizer});
    for (size_t i = 0; i < ev.memory.size() && i < ev.device_fwd_ms.size(); ++i) {
      predicted[ev.memory[i].id] += plan.microbatches * (ev.device_fwd_ms[i] + ev.device_bwd_ms[i]);
    }
  } catch (const std::invalid_argument& e) {
    spdlog::debug("no compute prediction for plan {}: {}", summary_of(plan), e.what());
    predicted.clear();
  }
  return predicted;
}

void JobSupervisor::Impl::watch_speed(const std::vector<actors::RoundReport>& reports) {
  if (!watch || watched_deployment != coordinator.deployments()) {
    // A placeholder profile predicts nothing the watch could compare: it learns.
    watch.emplace(options.straggler, options.profile.model == kUniformProfile
                                         ? std::map<std::string, double>{}
                                         : predicted_compute_ms(coordinator.plan(), options.profile));
    watched_deployment = coordinator.deployments();
    speed_expecting = false;
  }
  if (!speed_expecting) {
    speed.expect(predicted_compute_ms(coordinator.plan(), SpeedModel::scaled(options.profile, speed.assumed())));
    speed_expecting = true;
  }
  for (const auto& report : reports) {
    const auto measured = coordinator.take_compute_ms(report.round);
    for (const auto& device : speed.observe(report.round, measured))
      if (std::find(drifted.begin(), drifted.end(), device) == drifted.end()) drifted.push_back(device);
    if (options.adapt.speed_line_every > 0 && (report.round + 1) % options.adapt.speed_line_every == 0) {
      SupervisionEvent line;
      line.kind = "device_speed";
      line.text = "learned device speeds at round " + std::to_string(report.round);
      line.numbers = {{"at_round", static_cast<double>(report.round)}};
      line.scales = speed.estimates();
      emit(std::move(line));
    }
    take_probes();
    if (options.adapt.on) probe_idle_devices(report.round);
    for (const auto& v : watch->observe(report.round, measured)) {
      stragglers.push_back(v);
      char text[256];
      std::snprintf(text, sizeof text,
                    v.straggling ? "straggler: %s computes %.1fx slower than the others relative to the plan "
                                   "(%.0f ms per round, %.0f ms predicted), decided in round %llu"
                                 : "straggler no more: %s is back to %.1fx the others relative to the plan "
                                   "(%.0f ms per round, %.0f ms predicted), decided in round %llu",
                    v.device.c_str(), v.ratio_to_median, v.measured_ms, v.predicted_ms,
                    static_cast<unsigned long long>(v.round));
      emit(v.straggling ? "straggler" : "straggler-end", text, false, {v.device},
           {{"at_round", static_cast<double>(v.round)},
            {"measured_ms", v.measured_ms},
            {"predicted_ms", v.predicted_ms},
            {"ratio_to_median", v.ratio_to_median}});
    }
  }
}

void JobSupervisor::Impl::take_probes() {
  for (const auto& [device, probe] : coordinator.take_probes()) {
    if (probe.devices.size() != 1 || probe.devices.begin()->second.batch.empty()) continue;
    const auto& measured = probe.devices.begin()->second;
    if (profiling.erase(device)) {
      take_join_profile(device, measured);
      continue;
    }
    auto base = options.profile.devices.find(device);
    if (!options.adapt.on || base == options.profile.devices.end()) continue;
    const auto at = std::find(base->second.batch.begin(), base->second.batch.end(), measured.batch.front());
    if (at == base->second.batch.end()) continue;
    const size_t k = static_cast<size_t>(at - base->second.batch.begin());
    std::vector<double> ratios;
    for (size_t l = 0; l < measured.fwd_ms.size() && l < base->second.fwd_ms.size(); ++l) {
      const double before = base->second.fwd_ms[l][k] + base->second.bwd_ms[l][k];
      const double now = measured.fwd_ms[l].front() + measured.bwd_ms[l].front();
      if (before > 0 && now > 0) ratios.push_back(now / before);
    }
    if (ratios.empty()) continue;
    std::sort(ratios.begin(), ratios.end());
    if (speed.observe_probe(device, ratios[ratios.size() / 2]) &&
        std::find(drifted.begin(), drifted.end(), device) == drifted.end())
      drifted.push_back(device);
  }
}

void JobSupervisor::Impl::ask_join_profile(const std::string& device) {
  const auto now = std::chrono::steady_clock::now();
  if (auto asked = profiling.find(device); asked != profiling.end() && now - asked->second < kJoinProfileTimeout)
    return;  // asked already
  messages::ProfileRequest request;
  request.model = coordinator.spec().model;
  // One batch size, the largest the job profiled: the predictor has every
  // other from the cluster's profile and this device's scale.
  request.batches = {static_cast<uint32_t>(options.profile.devices.begin()->second.batch.back())};
  request.repeats = 1;
  readmit_at[device] = now + kJoinProfileTimeout;  // asked again then, unless the answer admits it first
  if (!coordinator.probe_speed(device, request)) return;
  profiling[device] = now;
  emit("profiling", device + " joined without a profile: its node measures batch size " +
                        std::to_string(request.batches.front()) + " beside the rounds; admitted when it answers",
       false, {device}, {{"at_round", static_cast<double>(coordinator.next_round())}});
}

void JobSupervisor::Impl::take_join_profile(const std::string& device, const planner::DeviceProfile& measured) {
  planner::Profile with = options.profile;
  with.devices[device] = measured;
  const std::vector<int> batches = options.profile.devices.begin()->second.batch;
  try {
    const planner::LatencyPredictor predictor(with);
    options.profile.devices[device] = predictor.completed(with, batches).devices.at(device);
    char text[200];
    std::snprintf(text, sizeof text,
                  "%s profiled: %zu batch size(s) measured, %zu predicted (it takes %.2fx the time of the first device)",
                  device.c_str(), measured.batch.size(), batches.size() - measured.batch.size(),
                  predictor.scale(device));
    emit("profiled", text, false, {device},
         {{"time_scale", predictor.scale(device)}, {"at_round", static_cast<double>(coordinator.next_round())}});
  } catch (const std::exception& e) {
    spdlog::warn("cannot predict a profile for {} from its short one ({}): it stays out of the plan", device, e.what());
    return;
  }
  readmit_at[device] = std::chrono::steady_clock::now();  // admitted at the next round boundary
}

void JobSupervisor::Impl::probe_idle_devices(uint64_t round) {
  // A placeholder profile has no times a short profile could be compared with.
  if (options.adapt.probe_idle_every == 0 || speed.calibrating() || options.profile.model == kUniformProfile ||
      (round + 1) % options.adapt.probe_idle_every != 0)
    return;
  for (const auto& device : idle_devices(coordinator.plan())) {
    auto base = options.profile.devices.find(device);
    if (base == options.profile.devices.end() || base->second.batch.empty()) continue;
    messages::ProfileRequest request;
    request.model = coordinator.spec().model;
    request.batches = {static_cast<uint32_t>(base->second.batch.back())};
    request.repeats = 1;
    coordinator.probe_speed(device, request);
  }
}

std::vector<actors::RoundReport> JobSupervisor::Impl::adapt() {
  if (!options.adapt.on || drifted.empty() || !coordinator.deployed()) return {};
  const std::vector<std::string> devices = std::exchange(drifted, {});
  const auto scales = speed.estimates();
  const planner::Profile learned = SpeedModel::scaled(options.profile, scales);
  std::string because;
  for (const auto& d : devices) {
    char part[96];
    std::snprintf(part, sizeof part, "%s%s computes %.2fx the time the plan assumed", because.empty() ? "" : "; ",
                  d.c_str(), scales.at(d) / speed.assumed().at(d));
    because += part;
  }
  SupervisionEvent event;
  event.kind = "adapt-kept";
  event.devices = devices;
  event.scales = scales;
  event.numbers["at_round"] = static_cast<double>(coordinator.next_round());
  const planner::Plan current = coordinator.plan();
  // Lost and awaited devices the running plan still names (in a stage or
  // idle); one a recovery already dropped from it is out of the search
  // anyway, and the planner refuses to be told of it.
  std::set<std::string> in_stages;
  for (const auto& stage : current.stages)
    for (const auto& d : stage.devices) in_stages.insert(d.id);
  std::set<std::string> named(current.idle_devices.begin(), current.idle_devices.end());
  named.insert(in_stages.begin(), in_stages.end());
  std::vector<std::string> unusable;
  for (const auto* group : {&lost, &awaited})
    for (const auto& d : *group)
      if (named.count(d)) unusable.push_back(d);
  // A candidate judged under the learned speeds: its round, the move's
  // bytes and time, the gain over the horizon (SpeedSpells: fewer rounds
  // when the drifting devices' speeds have lately changed sooner than it),
  // the devices it brings in.
  const auto cluster = plannable_cluster();
  double old_ms = 0;
  const uint64_t horizon = speed_spells.horizon(options.adapt.horizon_rounds, coordinator.next_round(), devices);
  speed_spells.drifted(coordinator.next_round(), devices);
  struct Verdict {
    planner::Plan plan;
    double new_ms = 0, bytes = 0, transfer_ms = 0, migration_ms = 0, gain_ms = 0;
    std::set<std::string> joining;
    bool pays = false;
  };
  auto judge = [&](planner::Plan plan) {
    Verdict v;
    v.plan = std::move(plan);
    v.new_ms = planner::evaluate(v.plan, cluster, learned, {options.optimizer}).round_ms;
    for (const auto& move : planner::layer_moves(current, v.plan, planner::ProfileTables(cluster, learned),
                                                 options.optimizer, unusable)) {
      if (move.local) continue;
      v.bytes += move.bytes;
      if (cluster.index_of(move.source) >= 0)
        v.transfer_ms += move.bytes * 8 / (cluster.bandwidth_mbps(move.source, move.device) * 1000);
    }
    for (const auto& stage : v.plan.stages)
      for (const auto& d : stage.devices)
        if (!in_stages.count(d.id)) v.joining.insert(d.id);
    v.migration_ms = switch_costs.estimate_ms(v.joining) + v.transfer_ms;
    v.gain_ms = (old_ms - v.new_ms) * static_cast<double>(horizon);
    v.pays = switch_pays(old_ms, v.new_ms, v.migration_ms, horizon) &&
             v.new_ms < old_ms * (1 - options.adapt.min_gain) && summary_of(v.plan) != summary_of(current);
    return v;
  };
  std::vector<actors::RoundReport> reports;
  std::string reason;
  std::optional<Verdict> verdict;
  try {
    old_ms = planner::evaluate(current, cluster, learned, {options.optimizer}).round_ms;
    if (auto candidate = try_ask_planner(unusable, {}, nullptr, &reason, nullptr, &learned, /*heavy=*/true))
      verdict = judge(std::move(*candidate));
    if (verdict && !verdict->pays && !verdict->joining.empty()) {
      // Bringing devices in costs their start: the best plan on the devices
      // in use may pay where that one does not.
      std::vector<std::string> only_in_use = unusable;
      for (const auto& d : current.idle_devices)
        if (std::find(only_in_use.begin(), only_in_use.end(), d) == only_in_use.end()) only_in_use.push_back(d);
      if (auto in_use = try_ask_planner(only_in_use, {}, nullptr, nullptr, nullptr, &learned, /*heavy=*/true)) {
        Verdict v = judge(std::move(*in_use));
        if (v.pays) verdict = std::move(v);
      }
    }
  } catch (const std::invalid_argument& e) {  // a plan the learned profile cannot evaluate
    reason = e.what();
    verdict.reset();
  }
  if (!verdict) {
    event.text = "adapt: " + because + "; kept the plan (no re-plan: " + reason + ")";
  } else {
    const Verdict& v = *verdict;
    event.numbers.insert({{"old_round_ms", old_ms}, {"new_round_ms", v.new_ms}, {"gain_ms", v.gain_ms},
                          {"migration_ms", v.migration_ms}, {"bytes_moved", v.bytes},
                          {"horizon_rounds", static_cast<double>(horizon)}});
    char numbers[320];
    std::snprintf(numbers, sizeof numbers,
                  "%.1f -> %.1f ms per round under the learned speeds: %.0f ms saved over %llu rounds against "
                  "%.0f ms to move %.1f MB%s",
                  old_ms, v.new_ms, v.gain_ms, static_cast<unsigned long long>(horizon), v.migration_ms,
                  v.bytes / 1e6, v.joining.empty() ? "" : " and start the devices it brings in");
    if (v.pays) {
      event.kind = "adapt";
      event.old_plan_json = planner::plan_to_json(current).dump();
      const auto t0 = std::chrono::steady_clock::now();
      auto moved = attempt([&] { return move_to(v.plan); });
      if (moved) reports = std::move(*moved);
      const double switch_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      event.numbers["switch_ms"] = switch_ms;
      if (moved) switch_costs.measured(v.joining, switch_ms - v.transfer_ms);
      event.plan_json = planner::plan_to_json(coordinator.plan()).dump();
      event.from_round = static_cast<int64_t>(coordinator.next_round());
      event.text = "adapt: " + because + "; switched to " + summary_of(coordinator.plan()) + " (" + numbers + ")";
    } else {
      event.text = "adapt: " + because + "; kept the plan (" + numbers + ")";
    }
  }
  // The plan in force is the best known for these speeds: only a further
  // drift asks again.
  speed.assume_estimates();
  speed_expecting = false;
  spdlog::info("{}", event.text);
  emit(std::move(event));
  return reports;
}

void JobSupervisor::Impl::write_checkpoint_at(uint64_t round) {
  Checkpoint checkpoint;
  const auto& spec = coordinator.spec();
  checkpoint.job = {{"round", round},
                    {"model", spec.model},
                    {"seed", spec.seed},
                    {"data_seed", spec.data_seed},
                    {"job_id", spec.job_id},
                    {"optimizer", actors::to_json(spec.optimizer)},
                    {"plan", planner::plan_to_json(coordinator.plan())}};
  if (const auto* scripted = compute::find_scripted(spec.model); scripted && !scripted->path.empty()) {
    checkpoint.job["model_file"] = std::filesystem::absolute(scripted->path).string();
    checkpoint.job["model_data"] = scripted->spec.dataset;
  }
  checkpoint.states = coordinator.fetch_states();
  write_checkpoint(options.checkpoint_path, checkpoint);
  emit("checkpoint", "checkpoint of round " + std::to_string(round) + " written to " + options.checkpoint_path, false);
}

Recovery recovery_from_name(const std::string& name) {
  static constexpr Named<Recovery> kRecoveryNames[] = {{Recovery::lightweight, "lightweight"},
                                                       {Recovery::heavy, "heavy"},
                                                       {Recovery::restart, "restart"},
                                                       {Recovery::stop, "stop"}};
  return parse_named(kRecoveryNames, name, "--replan mode");
}

JobSupervisor::JobSupervisor(caf::actor_system& system, actors::JobSpec spec, SupervisionOptions options,
                             actors::Mailbox* mailbox)
    : impl_(std::make_unique<Impl>(system, std::move(spec), std::move(options), mailbox)) {}

JobSupervisor::~JobSupervisor() = default;

void JobSupervisor::start(uint64_t first_round, const std::vector<messages::StageState>& states) {
  impl_->start(first_round, states);
}

std::vector<actors::RoundReport> JobSupervisor::run_round() { return impl_->run_round(); }
std::vector<actors::RoundReport> JobSupervisor::flush() { return impl_->flush(); }
std::vector<actors::RoundReport> JobSupervisor::switch_plan(const planner::Plan& plan) {
  return impl_->switch_plan(plan);
}
std::vector<messages::StageState> JobSupervisor::final_states() { return impl_->final_states(); }

uint64_t JobSupervisor::committed_rounds() const {
  const auto last = impl_->coordinator.last_committed();
  return last ? *last + 1 : 0;
}

uint64_t JobSupervisor::next_round() const { return impl_->coordinator.next_round(); }

void JobSupervisor::on_event(std::function<void(const SupervisionEvent&)> listener) {
  impl_->listener = std::move(listener);
}

void JobSupervisor::on_status(std::function<void(const std::string&)> listener) {
  impl_->status_listener = std::move(listener);
}

std::string JobSupervisor::status() const { return impl_->status(); }

void JobSupervisor::checkpoint_now() {
  Impl& m = *impl_;
  const auto last = m.coordinator.last_committed();
  if (m.options.checkpoint_path.empty() || !last) return;
  m.enter("checkpointing");
  m.write_checkpoint_at(*last);
  m.checkpoint_owed = false;
  m.enter("training");
}

std::map<std::string, double> JobSupervisor::device_scales() const { return impl_->speed.estimates(); }

void JobSupervisor::on_commit(std::function<void(const actors::RoundReport&)> listener) {
  impl_->coordinator.on_commit(std::move(listener));
}

const std::vector<FailureRecord>& JobSupervisor::failures() const { return impl_->failures; }
const std::vector<StragglerWatch::Verdict>& JobSupervisor::stragglers() const { return impl_->stragglers; }
actors::Coordinator& JobSupervisor::coordinator() { return impl_->coordinator; }
const planner::Plan& JobSupervisor::plan() const { return impl_->coordinator.plan(); }

}  // namespace asteroid::supervision
