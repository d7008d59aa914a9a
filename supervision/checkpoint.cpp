#include "supervision/checkpoint.h"

#include <spdlog/spdlog.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "compute/durable_file.h"
#include "messages/codec.h"

namespace asteroid::supervision {
namespace {

constexpr char kMagic[8] = {'A', 'S', 'T', 'C', 'K', 'P', 'T', '2'};    // with a CRC-32 at the end
constexpr char kMagicV1[8] = {'A', 'S', 'T', 'C', 'K', 'P', 'T', '1'};  // read only: no checksum

template <typename T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}

uint32_t crc_of(const char* data, size_t size) {
  return static_cast<uint32_t>(::crc32(::crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(data),
                                       static_cast<uInt>(size)));
}

}  // namespace

std::string previous_checkpoint(const std::string& path) { return path + ".prev"; }

void write_checkpoint(const std::string& path, const Checkpoint& checkpoint) {
  std::string bytes(kMagic, sizeof kMagic);
  const std::string job = checkpoint.job.dump();
  put<uint64_t>(bytes, job.size());
  bytes += job;
  put<uint32_t>(bytes, static_cast<uint32_t>(checkpoint.states.size()));
  for (const auto& state : checkpoint.states) {
    const auto envelope = messages::encode(state);
    put<uint64_t>(bytes, envelope.size());
    bytes.append(envelope.data(), envelope.size());
  }
  put<uint32_t>(bytes, crc_of(bytes.data(), bytes.size()));
  // The newest checkpoint becomes the previous generation.
  compute::write_file_atomically(path, bytes, "checkpoint", previous_checkpoint(path));
}

namespace {

// One checkpoint file, checked (the contract of read_checkpoint).
Checkpoint read_one(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read checkpoint " + path + ": " + std::strerror(errno));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t at = 0;
  auto need = [&](size_t n, const char* what) {
    if (bytes.size() - at < n) throw std::runtime_error("checkpoint " + path + " is truncated (" + what + ")");
  };
  need(sizeof kMagic, "header");
  const bool v1 = std::memcmp(bytes.data(), kMagicV1, sizeof kMagicV1) == 0;
  if (!v1 && std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    throw std::runtime_error(path + " is not an Asteroid checkpoint (bad magic)");
  }
  if (!v1) {
    need(sizeof kMagic + 4, "checksum");
    uint32_t stored;
    std::memcpy(&stored, bytes.data() + bytes.size() - 4, 4);
    bytes.resize(bytes.size() - 4);
    if (crc_of(bytes.data(), bytes.size()) != stored)
      throw std::runtime_error("checkpoint " + path + " is corrupted (checksum mismatch)");
  }
  at += sizeof kMagic;
  auto get64 = [&](const char* what) {
    need(8, what);
    uint64_t v;
    std::memcpy(&v, bytes.data() + at, 8);
    at += 8;
    return v;
  };
  const uint64_t job_size = get64("job length");
  need(job_size, "job description");
  Checkpoint checkpoint;
  try {
    checkpoint.job = nlohmann::json::parse(bytes.substr(at, job_size));
  } catch (const std::exception& e) {
    throw std::runtime_error("checkpoint " + path + ": the job description is not JSON: " + e.what());
  }
  at += job_size;
  need(4, "stage count");
  uint32_t stages;
  std::memcpy(&stages, bytes.data() + at, 4);
  at += 4;
  for (uint32_t s = 0; s < stages; ++s) {
    const uint64_t size = get64("stage length");
    need(size, "stage state");
    auto decoded = messages::decode_copy(bytes.data() + at, size);
    at += size;
    auto* state = decoded.ok() ? std::get_if<messages::StageState>(&*decoded.message) : nullptr;
    if (!state) {
      throw std::runtime_error("checkpoint " + path + ": stage " + std::to_string(s) + " is corrupted: " +
                               (decoded.ok() ? std::string("not a stage state") : decoded.error));
    }
    checkpoint.states.push_back(std::move(*state));
  }
  if (at != bytes.size()) throw std::runtime_error("checkpoint " + path + " has trailing bytes");
  return checkpoint;
}

}  // namespace

Checkpoint read_checkpoint(const std::string& path) {
  try {
    return read_one(path);
  } catch (const std::runtime_error& newest) {
    const std::string previous = previous_checkpoint(path);
    std::error_code ignored;
    if (!std::filesystem::exists(previous, ignored)) throw;
    try {
      Checkpoint older = read_one(previous);
      spdlog::warn("{}; continuing from the previous checkpoint {}", newest.what(), previous);
      return older;
    } catch (const std::runtime_error& also) {
      throw std::runtime_error(std::string(newest.what()) + "; and the previous checkpoint: " + also.what());
    }
  }
}

}  // namespace asteroid::supervision
