// The optimizer of a job, one enum for the whole project: compute runs it
// (compute/optimizer.h), the planner charges its state (k_opt, planner/
// types.h) and the wire carries it (OptimizerSpec, messages/envelope.h).
// Header-only and dependency-free, so every layer may include it. The
// values are the wire's and the checkpoints': do not reorder them.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace asteroid {

enum class OptimizerKind : uint8_t { sgd, momentum, adam };

// "sgd", "momentum", "adam".
inline const char* optimizer_name(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::sgd: return "sgd";
    case OptimizerKind::momentum: return "momentum";
    case OptimizerKind::adam: return "adam";
  }
  return "sgd";
}

// The kind of a name; throws std::invalid_argument naming the known ones.
inline OptimizerKind parse_optimizer(const std::string& name) {
  for (OptimizerKind k : {OptimizerKind::sgd, OptimizerKind::momentum, OptimizerKind::adam}) {
    if (name == optimizer_name(k)) return k;
  }
  throw std::invalid_argument("unknown optimizer \"" + name + "\" (expected sgd, momentum or adam)");
}

}  // namespace asteroid
