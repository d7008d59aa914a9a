#include "supervision/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "messages/codec.h"

namespace asteroid::supervision {
namespace {

constexpr char kMagic[8] = {'A', 'S', 'T', 'C', 'K', 'P', 'T', '1'};

template <typename T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}

}  // namespace

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
  const std::string temp = path + ".tmp";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw std::runtime_error("cannot write checkpoint " + temp + ": " + std::strerror(errno));
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n <= 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(temp.c_str());
      throw std::runtime_error("cannot write checkpoint " + temp + ": " + why);
    }
    written += static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(temp.c_str());
    throw std::runtime_error("cannot move checkpoint into place at " + path + ": " + why);
  }
}

Checkpoint read_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read checkpoint " + path + ": " + std::strerror(errno));
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t at = 0;
  auto need = [&](size_t n, const char* what) {
    if (bytes.size() - at < n) throw std::runtime_error("checkpoint " + path + " is truncated (" + what + ")");
  };
  need(sizeof kMagic, "header");
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    throw std::runtime_error(path + " is not an Asteroid checkpoint (bad magic)");
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

}  // namespace asteroid::supervision
