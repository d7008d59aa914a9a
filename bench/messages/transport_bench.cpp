// Transport benchmark: two processes on 127.0.0.1. The client makes a
// cluster's certificates, starts a copy of this program as the server, then
// measures
//   - the round trip of a tiny envelope (request/reply through CAF),
//   - the throughput of 1 MiB and 16 MiB tensor envelopes (encoded, sent
//     through CAF, decoded by the server), pipelined with one ack at the end,
//   - both again through mutual TLS (actors/tls.h: the client's route and
//     the server's gateway in front of the same CAF),
//   - a plain TCP socket moving the same bytes in the same run,
// and prints a markdown table with the ratios. Usage: bench_transport [--quick]
#include <arpa/inet.h>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "actors/system_config.h"
#include "actors/tls.h"
#include "actors/transport.h"
#include "apps/security/certificates.h"
#include "messages/transport.h"

namespace {

using namespace asteroid;
using Clock = std::chrono::steady_clock;
using messages::WireMessage;

// ---------------------------------------------------------------- server

// Replies to a heartbeat with a heartbeat; decodes gradients and, after the
// n-th one announced by a stateRequest{n}, replies with their total bytes.
void sink_actor(caf::blocking_actor* self) {
  uint64_t received = 0, bytes = 0, expected = 0;
  caf::strong_actor_ptr waiting;
  bool running = true;
  self->receive_while([&] { return running; })(
      [&](WireMessage& wire) {
        auto decoded = messages::from_wire(std::move(wire));
        if (!decoded.ok()) return;
        if (auto* hb = std::get_if<messages::Heartbeat>(&*decoded.message)) {
          self->make_response_promise<WireMessage>().deliver(messages::to_wire(*hb));
        } else if (auto* g = std::get_if<messages::Gradient>(&*decoded.message)) {
          ++received;
          bytes += g->tensor.bytes;
        } else if (auto* req = std::get_if<messages::StateRequest>(&*decoded.message)) {
          expected = req->round;
          waiting = self->current_sender();
          received = 0;
          bytes = 0;
        }
        if (waiting && expected > 0 && received == expected) {
          messages::Heartbeat ack{"sink", bytes, 0, {}};
          self->send(caf::actor_cast<caf::actor>(waiting), messages::to_wire(ack));
          waiting = nullptr;
          expected = 0;
        }
      },
      [&](caf::exit_msg&) { running = false; });
}

// Reads `n` bytes per announced transfer and answers one byte.
void raw_sink(int listen_fd) {
  int fd = accept(listen_fd, nullptr, nullptr);
  if (fd < 0) return;
  std::vector<char> buffer(1 << 20);
  for (;;) {
    uint64_t n = 0;
    if (recv(fd, &n, sizeof n, MSG_WAITALL) != sizeof n || n == 0) break;
    while (n > 0) {
      const ssize_t got = recv(fd, buffer.data(), std::min<uint64_t>(n, buffer.size()), 0);
      if (got <= 0) return;
      n -= static_cast<uint64_t>(got);
    }
    const char ack = 1;
    if (send(fd, &ack, 1, 0) != 1) break;
  }
  close(fd);
}

int serve(const std::string& tls_dir) {
  actors::AsteroidConfig config;
  caf::actor_system system(config);
  auto sink = system.spawn(sink_actor);
  auto port = system.middleman().publish(sink, 0, "127.0.0.1");
  actors::TlsTransport tls(actors::TlsIdentity{tls_dir, "sink", std::nullopt});
  const uint16_t tls_port = port ? tls.serve("127.0.0.1", 0, *port) : 0;
  int listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (!port || bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listen_fd, 1) != 0 ||
      getsockname(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::fprintf(stderr, "server: cannot listen\n");
    caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
    return 1;
  }
  std::printf("%u %u %u\n", *port, ntohs(addr.sin_port), tls_port);
  std::fflush(stdout);
  raw_sink(listen_fd);  // returns when the client closes the raw connection
  close(listen_fd);
  caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
  return 0;
}

// ---------------------------------------------------------------- client

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * (v.size() - 1))];
}

struct CafResult {
  std::vector<double> rtt_us;
  std::vector<double> mib_s;  // per size
  bool ok = true;
};

const std::vector<size_t> kSizes = {size_t{1} << 20, size_t{16} << 20};
int transfers(size_t size, bool quick) { return static_cast<int>((quick ? 64 : 256) * (1 << 20) / size) + 2; }

// Round trips and throughput to `sink` through one actor system.
CafResult measure_caf(caf::scoped_actor& self, const caf::actor& sink, bool quick) {
  CafResult out;
  const int pings = quick ? 500 : 3000;
  for (int i = 0; i < pings + 100; ++i) {
    const auto t0 = Clock::now();
    self->request(sink, std::chrono::seconds(10), messages::to_wire(messages::Heartbeat{"bench", uint64_t(i), 0, {}}))
        .receive([&](WireMessage&) {}, [&](caf::error&) { out.ok = false; });
    if (i >= 100) out.rtt_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  for (size_t size : kSizes) {
    const int count = transfers(size, quick);
    std::vector<float> values(size / sizeof(float), 1.5f);
    messages::Gradient g;
    g.tensor = messages::TensorBlob::copy_of(messages::DType::float32, {static_cast<int64_t>(values.size())},
                                             values.data(), size);
    double mib_s = 0;
    for (int repeat = 0; repeat < 2; ++repeat) {  // the first pass warms up
      self->send(sink, messages::to_wire(messages::StateRequest{static_cast<uint64_t>(count)}));
      const auto t0 = Clock::now();
      for (int i = 0; i < count; ++i) self->send(sink, messages::to_wire(g));
      self->receive([&](WireMessage&) {}, caf::after(std::chrono::seconds(120)) >> [&] { out.ok = false; });
      mib_s = count * (size / 1048576.0) / std::chrono::duration<double>(Clock::now() - t0).count();
    }
    out.mib_s.push_back(mib_s);
  }
  return out;
}

// The same bytes through a plain socket, one ack per transfer collected at
// the end (pipelined like CAF).
std::vector<double> measure_raw(unsigned raw_port, bool quick, bool& ok) {
  std::vector<double> out;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(raw_port));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::fprintf(stderr, "cannot reach the raw server\n");
    ok = false;
  }
  for (size_t size : kSizes) {
    const int count = transfers(size, quick);
    std::vector<char> bytes(size, 1);
    double mib_s = 0;
    for (int repeat = 0; repeat < 2 && ok; ++repeat) {
      const auto t1 = Clock::now();
      for (int i = 0; i < count && ok; ++i) {
        const uint64_t n = size;
        if (send(fd, &n, sizeof n, 0) != sizeof n) ok = false;
        size_t sent = 0;
        while (sent < size && ok) {
          const ssize_t k = send(fd, bytes.data() + sent, size - sent, 0);
          if (k <= 0) ok = false;
          sent += static_cast<size_t>(std::max<ssize_t>(k, 0));
        }
      }
      for (int i = 0; i < count && ok; ++i) {
        char ack;
        if (recv(fd, &ack, 1, MSG_WAITALL) != 1) ok = false;
      }
      mib_s = count * (size / 1048576.0) / std::chrono::duration<double>(Clock::now() - t1).count();
    }
    out.push_back(mib_s);
  }
  const uint64_t end = 0;
  (void)!send(fd, &end, sizeof end, 0);
  close(fd);
  return out;
}

int client(const char* self_path, bool quick) {
  // The cluster's certificates: the server is device "sink", this process
  // the coordinator.
  char pattern[] = "/tmp/bench-transport-XXXXXX";
  if (!mkdtemp(pattern)) return 1;
  const std::string tls_dir = std::string(pattern) + "/tls";
  apps::security::init_authority(tls_dir);
  apps::security::issue_certificate(tls_dir, "sink");
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return 1;
  const pid_t server = fork();
  if (server == 0) {
    dup2(pipe_fds[1], STDOUT_FILENO);
    close(pipe_fds[0]);
    execl(self_path, self_path, "--serve", tls_dir.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(pipe_fds[1]);
  char line[64] = {0};
  FILE* from_server = fdopen(pipe_fds[0], "r");
  unsigned caf_port = 0, raw_port = 0, tls_port = 0;
  auto stop_server = [&] {
    kill(server, SIGTERM);
    waitpid(server, nullptr, 0);
    std::filesystem::remove_all(pattern);
  };
  if (!from_server || !std::fgets(line, sizeof line, from_server) ||
      std::sscanf(line, "%u %u %u", &caf_port, &raw_port, &tls_port) != 3 || tls_port == 0) {
    std::fprintf(stderr, "server did not start\n");
    stop_server();
    return 1;
  }
  bool ok = true;
  CafResult plain, tls;
  {
    actors::AsteroidConfig config;
    caf::actor_system system(config);
    caf::scoped_actor self{system};
    auto sink = system.middleman().remote_actor("127.0.0.1", static_cast<uint16_t>(caf_port));
    if (!sink) {
      std::fprintf(stderr, "cannot reach the server: %s\n", system.render(sink.error()).c_str());
      stop_server();
      return 1;
    }
    plain = measure_caf(self, *sink, quick);
  }
  {
    actors::SystemOptions options;
    options.tls = std::make_shared<actors::TlsTransport>(actors::TlsIdentity{tls_dir, "coordinator", std::nullopt});
    actors::AsteroidConfig config(options);
    caf::actor_system system(config);
    caf::scoped_actor self{system};
    const auto to = actors::caf_endpoint(system, "127.0.0.1", static_cast<uint16_t>(tls_port), "sink");
    actors::wait_ready(to, Clock::now() + std::chrono::seconds(10));
    auto sink = system.middleman().remote_actor(to.host, to.port);
    if (!sink) {
      std::fprintf(stderr, "cannot reach the server through TLS: %s\n", system.render(sink.error()).c_str());
      stop_server();
      return 1;
    }
    tls = measure_caf(self, *sink, quick);
  }
  const std::vector<double> raw = measure_raw(raw_port, quick, ok);
  ok = ok && plain.ok && tls.ok;

  std::printf("Transport benchmark (2 processes on 127.0.0.1, %s)\n\n", quick ? "quick" : "full");
  std::printf("| measurement | CAF + Cap'n Proto | the same over mutual TLS | plain TCP | TLS / CAF | CAF / TCP |\n"
              "|---|---|---|---|---|---|\n");
  std::printf("| tiny envelope round trip p50 / p99 | %.0f / %.0f us | %.0f / %.0f us | | %.2f | |\n",
              percentile(plain.rtt_us, 0.5), percentile(plain.rtt_us, 0.99), percentile(tls.rtt_us, 0.5),
              percentile(tls.rtt_us, 0.99), percentile(tls.rtt_us, 0.5) / percentile(plain.rtt_us, 0.5));
  for (size_t i = 0; i < kSizes.size() && i < raw.size(); ++i) {
    std::printf("| %zu MiB tensor envelopes | %.0f MiB/s | %.0f MiB/s | %.0f MiB/s | %.2f | %.2f |\n",
                kSizes[i] >> 20, plain.mib_s[i], tls.mib_s[i], raw[i], tls.mib_s[i] / plain.mib_s[i],
                plain.mib_s[i] / raw[i]);
  }
  stop_server();
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2 && std::strcmp(argv[1], "--serve") == 0) return serve(argv[2]);
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  return client("/proc/self/exe", quick);
}
