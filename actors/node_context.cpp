#include "actors/node_context.h"

#include <caf/send.hpp>
#include <openssl/crypto.h>

#include "actors/atoms.h"
#include "actors/tls.h"
#include "compute/model_zoo.h"
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <csignal>
#include <thread>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>

namespace asteroid::actors {

NodeContext::NodeContext(std::string id, uint64_t memory_budget, double share)
    : node_id(std::move(id)),
      memory_budget_bytes(memory_budget),
      cpu_share(share),
      throttle(compute::CpuThrottle::from_environment(share > 0 ? std::optional<double>(share) : std::nullopt)) {}

void NodeContext::crash_point(const char* event, uint64_t round, bool or_later) const {
  const uint64_t at = static_cast<uint64_t>(crash_round);
  if (fault_action == FaultAction::anonymous || crash_round < 0 || crash_event != event) return;
  if (at != round && !(or_later && round > at)) return;
  if (fault_action == FaultAction::fail && failure_thrown.exchange(true)) return;
  static const char* const verbs[] = {"crashing", "freezing", "hanging", "", "failing"};
  spdlog::warn("node {}: {} at {} of round {} as asked", node_id, verbs[static_cast<int>(fault_action)], event, round);
  if (fault_action == FaultAction::hang) {
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  if (fault_action == FaultAction::fail) {
    throw std::runtime_error(std::string("injected failure at ") + event + " of round " + std::to_string(round));
  }
  std::raise(fault_action == FaultAction::freeze ? SIGSTOP : SIGKILL);
}

bool NodeContext::sends_anonymously(const char* event, uint64_t round) {
  if (fault_action != FaultAction::anonymous || crash_round < 0 || static_cast<uint64_t>(crash_round) != round ||
      crash_event != event)
    return false;
  if (anonymous_sent.exchange(true)) return false;
  spdlog::warn("node {}: sending a {} of round {} without a sender as asked", node_id, event, round);
  return true;
}

bool NodeContext::reserve(uint64_t bytes, std::string* why) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (memory_budget_bytes != 0 && reserved_bytes_ + bytes > memory_budget_bytes) {
    if (why) {
      char text[256];
      std::snprintf(text, sizeof text,
                    "node %s: the stage needs %.1f MiB but only %.1f MiB of its %.1f MiB budget are free",
                    node_id.c_str(), bytes / 1048576.0, (memory_budget_bytes - reserved_bytes_) / 1048576.0,
                    memory_budget_bytes / 1048576.0);
      *why = text;
    }
    return false;
  }
  reserved_bytes_ += bytes;
  return true;
}

void NodeContext::release(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  reserved_bytes_ = bytes > reserved_bytes_ ? 0 : reserved_bytes_ - bytes;
}

uint64_t NodeContext::reserved() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return reserved_bytes_;
}

void NodeContext::supervise(const caf::actor& stage, const caf::actor& coordinator, uint32_t stage_index,
                            uint32_t member) const {
  if (auto to = caf::actor_cast<caf::actor>(supervisor))
    caf::anon_send(to, supervise_atom::value, stage, coordinator, stage_index, member);
}

void NodeContext::add_stage(caf::actor_addr stage) {
  std::lock_guard<std::mutex> lock(mutex_);
  stages_.push_back(std::move(stage));
}

void NodeContext::remove_stage(const caf::actor_addr& stage) {
  std::lock_guard<std::mutex> lock(mutex_);
  stages_.erase(std::remove(stages_.begin(), stages_.end(), stage), stages_.end());
}

void NodeContext::stop_stages() {
  std::vector<caf::actor_addr> stages;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stages = stages_;
  }
  for (const auto& stage : stages) caf::anon_send_exit(stage, caf::exit_reason::user_shutdown);
}

NodeContext::DataFuture NodeContext::open_data(const std::string& model) {
  const std::string key = compute::find_model(model).dataset;
  std::lock_guard<std::mutex> lock(data_mutex_);
  auto& data = data_[key];
  if (!data.valid()) {
    data = std::async(std::launch::async, [model]() -> std::shared_ptr<const compute::Dataset> {
             return compute::open_dataset(model, compute::Split::train);
           }).share();
  }
  return data;
}

std::shared_ptr<const compute::Dataset> NodeContext::training_data(const std::string& model) {
  return open_data(model).get();
}

void NodeContext::prefetch_training_data(const std::string& model) { open_data(model); }

void NodeContext::keep_committed(const messages::StageState& state) {
  std::lock_guard<std::mutex> lock(mutex_);
  kept_.keep_committed(state);
}

void NodeContext::store_replica(messages::StageState state) {
  std::lock_guard<std::mutex> lock(mutex_);
  kept_.store_replica(std::move(state));
}

std::optional<messages::StageState> NodeContext::kept(const std::string& job, uint32_t begin, uint32_t end,
                                                      uint64_t round) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return kept_.find(job, begin, end, round);
}

std::vector<messages::KeptEntry> NodeContext::kept_list(const std::string& job) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return kept_.list(job);
}

size_t NodeContext::release(const messages::Release& release) {
  std::lock_guard<std::mutex> lock(mutex_);
  return kept_.release(release);
}

messages::NodeInfo NodeContext::info() const {
  messages::NodeInfo info;
  info.node_id = node_id;
  info.pid = static_cast<uint32_t>(::getpid());
  info.memory_budget_bytes = memory_budget_bytes;
  info.cpu_share = cpu_share;
  info.clock_us = messages::now_us();
  info.models = compute::model_names();
  std::lock_guard<std::mutex> lock(mutex_);
  info.kept_bytes = kept_.bytes();
  info.kept_states = kept_.count();
  info.refused_control = refused_control_;
  if (tls) info.refused_connections = tls->counters().refused;
  return info;
}

bool NodeContext::authorized(const std::string& authorization, const std::string& what) {
  if (control_token.empty()) return true;
  if (authorization.size() == control_token.size() &&
      CRYPTO_memcmp(authorization.data(), control_token.data(), control_token.size()) == 0) {
    return true;
  }
  refuse(what);
  return false;
}

void NodeContext::refuse(const std::string& what) {
  const uint64_t refused = ++refused_control_;
  // Logged, but not once per message of a flood.
  if (refused <= 10 || (refused & (refused - 1)) == 0) {
    spdlog::warn("node {}: refused to {} for a peer that is not an authenticated coordinator ({} refused so far)",
                 node_id, what, refused);
  }
}

}  // namespace asteroid::actors
