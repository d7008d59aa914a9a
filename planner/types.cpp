#include "planner/types.h"

#include <algorithm>

namespace asteroid::planner {

double Cluster::bandwidth_mbps(const std::string& a, const std::string& b) const {
  for (const Link& link : links) {
    if ((link.a == a && link.b == b) || (link.a == b && link.b == a)) return link.bandwidth_mbps;
  }
  return default_bandwidth_mbps;
}

int Cluster::index_of(const std::string& id) const {
  for (size_t i = 0; i < devices.size(); ++i) {
    if (devices[i].id == id) return static_cast<int>(i);
  }
  return -1;
}

int optimizer_state_factor(OptimizerKind o) {
  switch (o) {
    case OptimizerKind::sgd: return 0;
    case OptimizerKind::momentum: return 1;
    case OptimizerKind::adam: return 2;
  }
  return 0;
}

Cluster profiled_part(const Cluster& cluster, const Profile& profile) {
  Cluster part = cluster;
  auto unprofiled = [&](const std::string& id) { return profile.devices.count(id) == 0; };
  part.devices.erase(std::remove_if(part.devices.begin(), part.devices.end(),
                                    [&](const Device& d) { return unprofiled(d.id); }),
                     part.devices.end());
  part.links.erase(std::remove_if(part.links.begin(), part.links.end(),
                                  [&](const Link& l) { return unprofiled(l.a) || unprofiled(l.b); }),
                   part.links.end());
  return part;
}

}  // namespace asteroid::planner
