// The optimizer as the wire knows it (messages::OptimizerSpec) and as the
// compute layer runs it (compute::OptimizerConfig), one way and the other,
// and as JSON (checkpoints).
#pragma once

#include <nlohmann/json.hpp>

#include "compute/optimizer.h"
#include "messages/envelope.h"

namespace asteroid::actors {

compute::OptimizerConfig to_config(const messages::OptimizerSpec& spec);
messages::OptimizerSpec to_spec(const compute::OptimizerConfig& config);

nlohmann::json to_json(const messages::OptimizerSpec& spec);
// Throws nlohmann::json::exception naming the missing field.
messages::OptimizerSpec optimizer_from_json(const nlohmann::json& j);

}  // namespace asteroid::actors
