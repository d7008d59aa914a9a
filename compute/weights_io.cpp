#include "compute/weights_io.h"

#include "compute/durable_file.h"

#include <torch/torch.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace asteroid::compute {
namespace {

constexpr char kMagic[8] = {'A', 'S', 'T', 'W', 'G', 'T', '0', '1'};

static_assert(sizeof(float) == 4, "float32 expected");

bool little_endian() {
  const uint16_t one = 1;
  uint8_t b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

}  // namespace

void save_flat_weights(const std::string& path, const at::Tensor& flat) {
  if (!little_endian()) throw std::runtime_error("weights files are little-endian only");
  const at::Tensor f = flat.detach().reshape({-1}).to(torch::kFloat).contiguous();
  const uint64_t n = static_cast<uint64_t>(f.numel());
  std::string bytes(kMagic, sizeof kMagic);
  bytes.append(reinterpret_cast<const char*>(&n), sizeof n);
  bytes.append(reinterpret_cast<const char*>(f.data_ptr<float>()), 4 * n);
  write_file_atomically(path, bytes, "weights file");
}

at::Tensor load_flat_weights(const std::string& path) {
  if (!little_endian()) throw std::runtime_error("weights files are little-endian only");
  std::FILE* in = std::fopen(path.c_str(), "rb");
  if (in == nullptr)
    throw std::runtime_error("cannot read weights file '" + path + "': " + std::strerror(errno));
  char magic[8];
  uint64_t n = 0;
  if (std::fread(magic, 1, 8, in) != 8 || std::memcmp(magic, kMagic, 8) != 0 ||
      std::fread(&n, 8, 1, in) != 1) {
    std::fclose(in);
    throw std::runtime_error("'" + path + "' is not an asteroid weights file (no ASTWGT01 header)");
  }
  std::fseek(in, 0, SEEK_END);
  const long size = std::ftell(in);
  if (size < 0 || uint64_t(size) != 16 + 4 * n) {
    std::fclose(in);
    throw std::runtime_error("weights file '" + path + "' is truncated or too long: header says " +
                             std::to_string(n) + " values");
  }
  std::fseek(in, 16, SEEK_SET);
  at::Tensor t = torch::empty({int64_t(n)}, torch::kFloat);
  const bool ok = n == 0 || std::fread(t.data_ptr<float>(), 4, n, in) == n;
  std::fclose(in);
  if (!ok) throw std::runtime_error("cannot read weights file '" + path + "'");
  return t;
}

}  // namespace asteroid::compute
