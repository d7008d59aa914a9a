// Transport benchmark: two processes on 127.0.0.1. The client starts a copy
// of this program as the server, then measures
//   - the round trip of a tiny envelope (request/reply through CAF),
//   - the throughput of 1 MiB and 16 MiB tensor envelopes (encoded, sent
//     through CAF, decoded by the server), pipelined with one ack at the end,
//   - a plain TCP socket moving the same bytes in the same run,
// and prints a markdown table with the ratio. Usage: bench_transport [--quick]
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
#include <string>
#include <thread>
#include <vector>

#include "actors/system_config.h"
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

int serve() {
  actors::AsteroidConfig config;
  caf::actor_system system(config);
  auto sink = system.spawn(sink_actor);
  auto port = system.middleman().publish(sink, 0, "127.0.0.1");
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
  std::printf("%u %u\n", *port, ntohs(addr.sin_port));
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

struct Row {
  std::string what;
  double caf = 0, raw = 0;  // MiB/s
};

int client(const char* self_path, bool quick) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return 1;
  const pid_t server = fork();
  if (server == 0) {
    dup2(pipe_fds[1], STDOUT_FILENO);
    close(pipe_fds[0]);
    execl(self_path, self_path, "--serve", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(pipe_fds[1]);
  char line[64] = {0};
  FILE* from_server = fdopen(pipe_fds[0], "r");
  unsigned caf_port = 0, raw_port = 0;
  if (!from_server || !std::fgets(line, sizeof line, from_server) ||
      std::sscanf(line, "%u %u", &caf_port, &raw_port) != 2) {
    std::fprintf(stderr, "server did not start\n");
    kill(server, SIGKILL);
    waitpid(server, nullptr, 0);
    return 1;
  }
  int status = 0;
  {
    actors::AsteroidConfig config;
    caf::actor_system system(config);
    caf::scoped_actor self{system};
    auto sink = system.middleman().remote_actor("127.0.0.1", static_cast<uint16_t>(caf_port));
    if (!sink) {
      std::fprintf(stderr, "cannot reach the server: %s\n", system.render(sink.error()).c_str());
      kill(server, SIGKILL);
      waitpid(server, nullptr, 0);
      return 1;
    }
    // Round trip of a tiny envelope.
    const int pings = quick ? 500 : 3000;
    std::vector<double> rtt;
    for (int i = 0; i < pings + 100; ++i) {
      const auto t0 = Clock::now();
      self->request(*sink, std::chrono::seconds(10), messages::to_wire(messages::Heartbeat{"bench", uint64_t(i), 0, {}}))
          .receive([&](WireMessage&) {}, [&](caf::error&) {});
      if (i >= 100) rtt.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }

    // Raw socket.
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(raw_port));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      std::fprintf(stderr, "cannot reach the raw server\n");
      status = 1;
    }

    std::vector<Row> rows;
    for (size_t size : {size_t{1} << 20, size_t{16} << 20}) {
      const int count = static_cast<int>((quick ? 64 : 256) * (1 << 20) / size) + 2;
      std::vector<float> values(size / sizeof(float), 1.5f);
      messages::Gradient g;
      g.tensor = messages::TensorBlob::copy_of(messages::DType::float32, {static_cast<int64_t>(values.size())},
                                               values.data(), size);
      Row row;
      row.what = std::to_string(size >> 20) + " MiB tensor envelopes";
      for (int repeat = 0; repeat < 2; ++repeat) {  // the first pass warms up
        // Through CAF: encode, send, decode on the server, one ack at the end.
        self->send(*sink, messages::to_wire(messages::StateRequest{static_cast<uint64_t>(count)}));
        const auto t0 = Clock::now();
        for (int i = 0; i < count; ++i) self->send(*sink, messages::to_wire(g));
        self->receive([&](WireMessage&) {}, caf::after(std::chrono::seconds(120)) >> [&] { status = 1; });
        row.caf = count * (size / 1048576.0) / std::chrono::duration<double>(Clock::now() - t0).count();
        // The same bytes through a plain socket.
        const auto t1 = Clock::now();
        for (int i = 0; i < count && status == 0; ++i) {
          const uint64_t n = size;
          if (send(fd, &n, sizeof n, 0) != sizeof n) status = 1;
          size_t sent = 0;
          while (sent < size && status == 0) {
            const ssize_t k = send(fd, reinterpret_cast<const char*>(values.data()) + sent, size - sent, 0);
            if (k <= 0) status = 1;
            sent += static_cast<size_t>(std::max<ssize_t>(k, 0));
          }
        }
        // One ack per transfer, collected at the end (pipelined like CAF).
        for (int i = 0; i < count && status == 0; ++i) {
          char ack;
          if (recv(fd, &ack, 1, MSG_WAITALL) != 1) status = 1;
        }
        row.raw = count * (size / 1048576.0) / std::chrono::duration<double>(Clock::now() - t1).count();
      }
      rows.push_back(row);
    }
    const uint64_t end = 0;
    (void)!send(fd, &end, sizeof end, 0);
    close(fd);
    caf::anon_send_exit(*sink, caf::exit_reason::user_shutdown);

    std::printf("Transport benchmark (2 processes on 127.0.0.1, %s)\n\n", quick ? "quick" : "full");
    std::printf("| measurement | CAF + Cap'n Proto | plain TCP | ratio |\n|---|---|---|---|\n");
    std::printf("| tiny envelope round trip p50 / p99 | %.0f / %.0f us | | |\n", percentile(rtt, 0.5),
                percentile(rtt, 0.99));
    for (const Row& r : rows) {
      std::printf("| %s | %.0f MiB/s | %.0f MiB/s | %.2f |\n", r.what.c_str(), r.caf, r.raw, r.caf / r.raw);
    }
  }
  kill(server, SIGTERM);
  waitpid(server, nullptr, 0);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--serve") == 0) return serve();
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  return client("/proc/self/exe", quick);
}
