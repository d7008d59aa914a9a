// The optimizer of a job, one enum and one set of hyper-parameters for the
// whole project: compute runs it (compute::OptimizerConfig), the planner
// charges its state (k_opt, planner/types.h) and the wire carries it
// (messages::OptimizerSpec); both names are OptimizerSettings.
// Header-only and dependency-free, so every layer may include it. The
// values are the wire's and the checkpoints': do not reorder them.
#pragma once

#include <cstdint>
#include <string>

#include "messages/enum_names.h"

namespace asteroid {

enum class OptimizerKind : uint8_t { sgd, momentum, adam };

struct OptimizerSettings {
  OptimizerKind kind = OptimizerKind::momentum;
  double lr = 0.05;
  double momentum = 0.9;                         // momentum only
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // adam only
  double weight_decay = 0;
};

inline constexpr Named<OptimizerKind> kOptimizerNames[] = {
    {OptimizerKind::sgd, "sgd"}, {OptimizerKind::momentum, "momentum"}, {OptimizerKind::adam, "adam"}};

// "sgd", "momentum", "adam".
inline const char* optimizer_name(OptimizerKind kind) { return name_of(kOptimizerNames, kind); }

// The kind of a name; throws std::invalid_argument naming the known ones.
inline OptimizerKind parse_optimizer(const std::string& name) {
  return parse_named(kOptimizerNames, name, "optimizer");
}

}  // namespace asteroid
