#include "apps/service/api_token.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>

namespace asteroid::apps::service {

std::string read_token_file(const std::string& path) {
  std::ifstream in(path);
  std::string token;
  if (!in || !std::getline(in, token)) throw std::runtime_error("cannot read a token from " + path);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.empty()) throw std::runtime_error(path + " holds no token");
  return token;
}

std::string api_token(const std::string& state_dir) {
  const std::string path = (std::filesystem::path(state_dir) / kTokenFile).string();
  if (std::filesystem::exists(path)) return read_token_file(path);
  std::random_device urandom;  // /dev/urandom on Linux
  std::string token;
  const char* hex = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) {
    const unsigned byte = urandom() & 0xff;
    token += hex[byte >> 4];
    token += hex[byte & 15];
  }
  std::filesystem::create_directories(state_dir);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
  const std::string line = token + "\n";
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!written) throw std::runtime_error("cannot write " + path);
  return token;
}

bool bearer_matches(const std::string& authorization, const std::string& token) {
  const std::string prefix = "Bearer ";
  if (authorization.compare(0, prefix.size(), prefix) != 0) return false;
  const std::string given = authorization.substr(prefix.size());
  if (given.size() != token.size()) return false;
  unsigned char differ = 0;
  for (size_t i = 0; i < token.size(); ++i) differ |= static_cast<unsigned char>(given[i] ^ token[i]);
  return differ == 0;
}

}  // namespace asteroid::apps::service
