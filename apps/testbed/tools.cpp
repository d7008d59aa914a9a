#include "apps/testbed/tools.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "compute/cpu_throttle.h"

namespace asteroid::testbed {

namespace {

using SteadyClock = std::chrono::steady_clock;

double seconds_since(SteadyClock::time_point t0) {
  return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

int listen_on(const std::string& host, uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1 ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 64) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

uint16_t local_port(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

// Reads a connection to EOF; returns (payload bytes after the first read,
// seconds from the first read to the last).
std::pair<double, double> drain(int fd, double timeout_s) {
  std::vector<char> buf(1 << 16);
  double bytes = 0;
  SteadyClock::time_point first{}, last{};
  bool started = false;
  auto deadline = SteadyClock::now() + std::chrono::duration<double>(timeout_s);
  while (SteadyClock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    last = SteadyClock::now();
    if (!started) {
      started = true;
      first = last;
    } else {
      bytes += static_cast<double>(n);
    }
  }
  double secs = started ? std::chrono::duration<double>(last - first).count() : 0;
  return {bytes, secs};
}

}  // namespace

int run_probe_receiver(const std::string& host, uint16_t port, double timeout_s) {
  int lfd = listen_on(host, port);
  if (lfd < 0) {
    std::fprintf(stderr, "probe-link: cannot listen on %s:%u: %s\n", host.c_str(), port, std::strerror(errno));
    return 1;
  }
  std::printf("listening %u\n", local_port(lfd));
  std::fflush(stdout);
  pollfd p{lfd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout_s * 1000)) <= 0) {
    std::fprintf(stderr, "probe-link: no connection within %.0f s\n", timeout_s);
    ::close(lfd);
    return 1;
  }
  int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(lfd);
  if (fd < 0) return 1;
  auto [bytes, secs] = drain(fd, timeout_s);
  ::close(fd);
  double mbps = secs > 0 ? bytes * 8 / secs / 1e6 : 0;
  std::printf("{\"bytes\": %.0f, \"seconds\": %.6f, \"mbps\": %.3f}\n", bytes, secs, mbps);
  std::fflush(stdout);
  return secs > 0 ? 0 : 1;
}

int run_probe_sender(const std::string& host, uint16_t port, double seconds, double max_bytes) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (fd < 0 || ::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    std::fprintf(stderr, "probe-link: cannot connect to %s:%u: %s\n", host.c_str(), port, std::strerror(errno));
    if (fd >= 0) ::close(fd);
    return 1;
  }
  std::vector<char> buf(1 << 16, 'x');
  double sent = 0;
  auto t0 = SteadyClock::now();
  while (seconds_since(t0) < seconds && (max_bytes <= 0 || sent < max_bytes)) {
    ssize_t n = ::send(fd, buf.data(), buf.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::fprintf(stderr, "probe-link: send: %s\n", std::strerror(errno));
      ::close(fd);
      return 1;
    }
    sent += static_cast<double>(n);
  }
  ::shutdown(fd, SHUT_WR);
  // Wait for the receiver to close (it has everything then), at most 30 s.
  char c;
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 30000) > 0) (void)::read(fd, &c, 1);
  double secs = seconds_since(t0);
  ::close(fd);
  std::printf("{\"bytes\": %.0f, \"seconds\": %.6f, \"mbps\": %.3f}\n", sent, secs, sent * 8 / secs / 1e6);
  std::fflush(stdout);
  return 0;
}

int run_burn(long long iterations) {
  compute::CpuThrottle throttle = compute::CpuThrottle::from_environment();
  timespec c0{}, c1{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
  auto t0 = SteadyClock::now();
  volatile unsigned long long sink = 0;
  unsigned long long x = 88172645463325252ULL;
  const long long slice = 1 << 20;
  for (long long done = 0; done < iterations; done += slice) {
    long long n = std::min(slice, iterations - done);
    throttle.run([&] {
      for (long long i = 0; i < n; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
      }
      sink = sink + x;
    });
  }
  double wall = seconds_since(t0);
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
  double cpu = static_cast<double>(c1.tv_sec - c0.tv_sec) + static_cast<double>(c1.tv_nsec - c0.tv_nsec) / 1e9;
  std::printf("{\"iterations\": %lld, \"wall_s\": %.6f, \"cpu_s\": %.6f}\n", iterations, wall, cpu);
  std::fflush(stdout);
  return 0;
}

int run_dummy_node(const std::string& host, uint16_t port, const std::string& id) {
  int lfd = listen_on(host, port);
  if (lfd < 0) {
    std::fprintf(stderr, "dummy-node %s: cannot listen on %s:%u: %s\n", id.c_str(), host.c_str(), port,
                 std::strerror(errno));
    return 1;
  }
  std::printf("dummy-node %s listening on %s:%u\n", id.c_str(), host.c_str(), local_port(lfd));
  std::fflush(stdout);
  while (true) {
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    std::thread([fd] {
      auto [bytes, secs] = drain(fd, 3600);
      ::close(fd);
      std::printf("conn bytes=%.0f seconds=%.6f mbps=%.3f\n", bytes, secs, secs > 0 ? bytes * 8 / secs / 1e6 : 0.0);
      std::fflush(stdout);
    }).detach();
  }
}

}  // namespace asteroid::testbed

#include "apps/testbed/relay.h"

namespace asteroid::testbed {

int tool_main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  auto opt = [&](const std::string& name, const std::string& def = "") {
    for (size_t i = 0; i + 1 < a.size(); ++i)
      if (a[i] == name) return a[i + 1];
    return def;
  };
  auto flag = [&](const std::string& name) {
    for (const auto& x : a)
      if (x == name) return true;
    return false;
  };
  if (a.empty()) {
    std::fprintf(stderr, "usage: %s node|cluster relay|probe-link|burn ...\n", argv[0]);
    return 2;
  }
  try {
    if (a[0] == "node") {
      return run_dummy_node(opt("--host", "127.0.0.1"), static_cast<uint16_t>(std::stoi(opt("--port", "0"))),
                            opt("--id", "node"));
    }
    if (a[0] == "cluster" && a.size() > 1 && a[1] == "relay") return run_relay_daemon(opt("--config"));
    if (a[0] == "probe-link") {
      if (flag("--listen"))
        return run_probe_receiver(opt("--host", "0.0.0.0"), static_cast<uint16_t>(std::stoi(opt("--port", "0"))),
                                  std::stod(opt("--timeout", "60")));
      std::string to = opt("--connect");
      auto colon = to.rfind(':');
      if (colon == std::string::npos) throw std::invalid_argument("--connect HOST:PORT");
      return run_probe_sender(to.substr(0, colon), static_cast<uint16_t>(std::stoi(to.substr(colon + 1))),
                              std::stod(opt("--seconds", "3")), std::stod(opt("--bytes", "0")));
    }
    if (a[0] == "burn") return run_burn(std::stoll(opt("--iterations", "100000000")));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
    return 2;
  }
  std::fprintf(stderr, "%s: unknown tool '%s'\n", argv[0], a[0].c_str());
  return 2;
}

}  // namespace asteroid::testbed
