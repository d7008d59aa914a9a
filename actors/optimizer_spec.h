// The optimizer (messages::OptimizerSpec, the same struct as
// compute::OptimizerConfig) as JSON (checkpoints).
#pragma once

#include <nlohmann/json.hpp>

#include "messages/envelope.h"

namespace asteroid::actors {

nlohmann::json to_json(const messages::OptimizerSpec& spec);
// Throws nlohmann::json::exception naming the missing field.
messages::OptimizerSpec optimizer_from_json(const nlohmann::json& j);

}  // namespace asteroid::actors
