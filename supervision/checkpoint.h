// Coordinator checkpoints: everything needed to continue a job after the
// coordinator itself died (the plan, the round, the data position, every
// stage's weights and optimizer state), written atomically (temp file,
// fsync, rename) so a crash never leaves half a checkpoint.
//
// File format (little-endian): "ASTCKPT1", u64 n, n bytes of JSON (job
// description: model, plan, round, seeds, optimizer, batch), u32 stages,
// then per stage u64 m and m bytes of a Cap'n Proto stageState envelope.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "messages/envelope.h"

namespace asteroid::supervision {

struct Checkpoint {
  nlohmann::json job;                        // "round": the last committed round, ...
  std::vector<messages::StageState> states;  // stage order
};

// Throws std::runtime_error naming the path when it cannot be written.
void write_checkpoint(const std::string& path, const Checkpoint& checkpoint);
// Throws std::runtime_error naming the path and what is wrong (missing,
// truncated, not a checkpoint, corrupted stage state).
Checkpoint read_checkpoint(const std::string& path);

}  // namespace asteroid::supervision
