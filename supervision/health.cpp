#include "supervision/health.h"

namespace asteroid::supervision {

void HealthTracker::watch(const std::string& device, Time now) { devices_[device] = Entry{now, false, false}; }

void HealthTracker::forget(const std::string& device) { devices_.erase(device); }

void HealthTracker::heard(const std::string& device, Time now) {
  auto it = devices_.find(device);
  if (it != devices_.end() && !it->second.dead && now > it->second.last_heard) it->second.last_heard = now;
}

void HealthTracker::gone(const std::string& device) {
  auto it = devices_.find(device);
  if (it != devices_.end()) it->second.dead = true;
}

std::vector<std::string> HealthTracker::newly_dead(Time now) {
  std::vector<std::string> dead;
  for (auto& [device, entry] : devices_) {
    if (!entry.dead && now - entry.last_heard > options_.deadline) entry.dead = true;
    if (entry.dead && !entry.reported) {
      entry.reported = true;
      dead.push_back(device);
    }
  }
  return dead;
}

bool HealthTracker::alive(const std::string& device) const {
  auto it = devices_.find(device);
  return it != devices_.end() && !it->second.dead;
}

std::vector<std::string> HealthTracker::alive_devices() const {
  std::vector<std::string> out;
  for (const auto& [device, entry] : devices_) {
    if (!entry.dead) out.push_back(device);
  }
  return out;
}

}  // namespace asteroid::supervision
