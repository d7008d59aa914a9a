#include "compute/durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace asteroid::compute {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& step, const std::string& path) {
  throw std::runtime_error("cannot " + step + " " + what + " '" + path + "': " + std::strerror(errno));
}

// A directory on a file system that cannot sync directories (EINVAL) is
// not an error.
void sync_directory_of(const std::string& path, const std::string& what) {
  const auto parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) fail(what, "open the directory of", path);
  const bool ok = ::fsync(fd) == 0 || errno == EINVAL;
  const int saved = errno;
  ::close(fd);
  errno = saved;
  if (!ok) fail(what, "sync the directory of", path);
}

}  // namespace

void write_file_atomically(const std::string& path, const std::string& bytes, const std::string& what,
                           const std::string& keep_previous_as) {
  const std::string temp = path + ".tmp";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(what, "write", temp);
  auto give_up = [&](const char* step, const std::string& shown) {
    const int saved = errno;
    ::unlink(temp.c_str());
    errno = saved;
    fail(what, step, shown);
  };
  auto abandon = [&](const char* step) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    give_up(step, temp);
  };
  for (size_t written = 0; written < bytes.size();) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) abandon("write");
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) abandon("sync");
  if (::close(fd) != 0) give_up("write", temp);
  std::error_code ignored;
  if (!keep_previous_as.empty() && std::filesystem::exists(path, ignored) &&
      std::rename(path.c_str(), keep_previous_as.c_str()) != 0)
    give_up("keep the previous generation of", path);
  if (std::rename(temp.c_str(), path.c_str()) != 0) give_up("move into place", path);
  sync_directory_of(path, what);
}

}  // namespace asteroid::compute
