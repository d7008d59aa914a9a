#include "planner/types.h"

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

}  // namespace asteroid::planner
