#include "actors/peer_watch.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace asteroid::actors {

PeerWatch::PeerWatch(std::string node_id, std::chrono::milliseconds interval, std::chrono::milliseconds deadline)
    : node_id_(std::move(node_id)), interval_(interval), deadline_(deadline) {
  pinger_ = std::make_unique<HeartbeatPinger>(
      [this](const messages::Heartbeat& reply, const std::string& mac, Clock::time_point at) {
        on_reply(reply, mac, at);
      });
  thread_ = std::thread([this] { run(); });
}

PeerWatch::~PeerWatch() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  stop_signal_.notify_all();
  if (thread_.joinable()) thread_.join();
  pinger_.reset();  // its thread calls on_reply: gone before the maps
}

void PeerWatch::set_peers(const std::vector<messages::Peer>& peers) {
  std::map<std::string, Peer> next;
  const auto now = Clock::now();
  for (const auto& p : peers) {
    if (p.device_id == node_id_) continue;
    std::string why;
    auto endpoint = resolve_datagram_endpoint(p.host, p.port, &why);
    if (!endpoint) {
      spdlog::warn("node {}: cannot watch peer {}: {}", node_id_, p.device_id, why);
      continue;
    }
    next[p.device_id] = Peer{std::move(*endpoint), now, p.heartbeat_key};
  }
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [id, peer] : next) {
    auto old = peers_.find(id);
    if (old != peers_.end()) peer.last_heard = old->second.last_heard;
  }
  peers_ = std::move(next);
}

std::vector<std::string> PeerWatch::unreachable() const {
  const auto now = Clock::now();
  std::vector<std::string> out;
  std::lock_guard<std::mutex> lock(mutex_);
  if (now - last_tick_ > deadline_ / 2) return out;  // not run lately: a stale view (see run)
  for (const auto& [id, peer] : peers_) {
    if (now - peer.last_heard > deadline_) out.push_back(id);
  }
  return out;
}

std::vector<std::string> PeerWatch::keys() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [id, peer] : peers_)
    if (!peer.key.empty() && std::find(out.begin(), out.end(), peer.key) == out.end()) out.push_back(peer.key);
  return out;
}

void PeerWatch::on_reply(const messages::Heartbeat& reply, const std::string& mac, Clock::time_point at) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = pending_.find(reply.sequence);
  if (it == pending_.end()) return;
  auto peer = peers_.find(it->second.first);
  if (peer == peers_.end()) return;
  const bool genuine = reply.node_id == peer->first &&
                       (peer->second.key.empty() || heartbeat_mac_matches(peer->second.key, reply, mac));
  if (!genuine) {
    spdlog::debug("node {}: dropped an answer for peer {} that is not its own", node_id_, peer->first);
    return;
  }
  if (at > peer->second.last_heard) peer->second.last_heard = at;
  pending_.erase(it);
}

void PeerWatch::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  last_tick_ = Clock::now();
  while (!stop_signal_.wait_for(lock, interval_, [this] { return stopping_; })) {
    const auto now = Clock::now();
    // This node did not run for a while (frozen, starved): the silence of
    // its peers meanwhile proves nothing, so every peer starts afresh.
    if (now - last_tick_ > deadline_ / 2) {
      for (auto& [id, peer] : peers_) peer.last_heard = now;
    }
    last_tick_ = now;
    for (auto it = pending_.begin(); it != pending_.end();)
      it = now - it->second.second > deadline_ ? pending_.erase(it) : std::next(it);
    for (const auto& [id, peer] : peers_) {
      const uint64_t sequence = ++sequence_;
      std::string why;
      if (pinger_->send(peer.endpoint, messages::Heartbeat{node_id_, sequence, 0, {}}, &why, peer.key))
        pending_[sequence] = {id, now};
    }
  }
}

}  // namespace asteroid::actors
