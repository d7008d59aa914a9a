// Coordinator checkpoints: everything needed to continue a job after the
// coordinator itself died (the plan, the round, the data position, every
// stage's weights and optimizer state), written atomically (temp file,
// checked fsync, rename, checked fsync of the directory) so a crash never
// leaves half a checkpoint, and in two generations: the one it replaces
// stays as PATH.prev, and a newest checkpoint that is missing, truncated or
// fails its checksum is replaced on reading by the previous one (with a
// warning).
//
// File format (little-endian): "ASTCKPT2", u64 n, n bytes of JSON (job
// description: model, plan, round, seeds, optimizer, batch), u32 stages,
// then per stage u64 m and m bytes of a Cap'n Proto stageState envelope,
// then the CRC-32 (zlib) of everything before it as u32. "ASTCKPT1" files
// (the same without the checksum) are still read.
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

// Throws std::runtime_error naming the path when it cannot be written or
// synced (the checkpoint in place, if any, is then left as it was).
void write_checkpoint(const std::string& path, const Checkpoint& checkpoint);
// The newest readable generation. Throws std::runtime_error naming the path
// and what is wrong (missing, truncated, not a checkpoint, checksum
// mismatch, corrupted stage state), and the previous generation's problem
// too when there is one.
Checkpoint read_checkpoint(const std::string& path);
// Where write_checkpoint keeps the generation before the newest: PATH.prev.
std::string previous_checkpoint(const std::string& path);

}  // namespace asteroid::supervision
