#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <thread>
#include <vector>

#include "apps/testbed/relay.h"

namespace asteroid::testbed {
namespace {

using SC = std::chrono::steady_clock;
using std::chrono::microseconds;
using std::chrono::milliseconds;

TEST(LinkShaper, SerialisesAtTheBandwidthPlusLatency) {
  LinkShaper s(8.0, 2.0);  // 8 Mbit/s = 1 byte per microsecond, 2 ms
  SC::time_point t0{};
  t0 += std::chrono::seconds(100);
  EXPECT_EQ(s.reserve(1000, t0), t0 + microseconds(1000) + milliseconds(2));
  // Queued behind the first chunk.
  EXPECT_EQ(s.reserve(500, t0), t0 + microseconds(1500) + milliseconds(2));
  // An idle link starts again at once.
  SC::time_point later = t0 + std::chrono::seconds(1);
  EXPECT_EQ(s.reserve(100, later), later + microseconds(100) + milliseconds(2));
  EXPECT_THROW(LinkShaper(0, 0), std::invalid_argument);
  EXPECT_THROW(LinkShaper(1, -1), std::invalid_argument);
}

// 127.0.0.1:port.
sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// A socket of `type` (SOCK_STREAM, SOCK_DGRAM) bound to a free loopback port, returned in `port`.
int bound_any(int type, uint16_t& port) {
  int fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
  sockaddr_in a = loopback(0);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port = ntohs(a.sin_port);
  return fd;
}

int listen_any(uint16_t& port) {
  int fd = bound_any(SOCK_STREAM, port);
  ::listen(fd, 8);
  return fd;
}

int udp_any(uint16_t& port) { return bound_any(SOCK_DGRAM, port); }

int connect_to(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = loopback(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// The route of link "x" to target_port on this machine.
RelayRoute route_to(uint16_t target_port, double bandwidth_mbps) {
  RelayRoute r;
  r.id = "x";
  r.target_port = target_port;
  r.bandwidth_mbps = bandwidth_mbps;
  return r;
}

// A relay on its own io thread, stopped and joined on destruction.
struct RelayRunner {
  boost::asio::io_context io;
  std::unique_ptr<ShapingRelay> relay;
  std::thread thread;
  explicit RelayRunner(const RelayRoute& r) {
    relay = std::make_unique<ShapingRelay>(io, r);
    relay->start();
    thread = std::thread([this] {
      auto guard = boost::asio::make_work_guard(io);
      io.run();
    });
  }
  ~RelayRunner() {
    boost::asio::post(io, [this] { relay->stop(); });
    io.stop();
    thread.join();
  }
};

TEST(ShapingRelay, ForwardsBytesUnchangedBothWays) {
  uint16_t node_port = 0;
  int lfd = listen_any(node_port);
  std::thread echo([lfd] {
    pollfd p{lfd, POLLIN, 0};
    if (::poll(&p, 1, 10000) <= 0) return;
    int c = ::accept(lfd, nullptr, nullptr);
    std::vector<char> buf(65536);
    ssize_t n;
    while ((n = ::read(c, buf.data(), buf.size())) > 0) ::send(c, buf.data(), static_cast<size_t>(n), MSG_NOSIGNAL);
    ::close(c);
  });
  RelayRunner relay(route_to(node_port, 1000));
  int fd = connect_to(relay.relay->port());
  ASSERT_GE(fd, 0);
  std::vector<char> sent(1 << 20), got;
  for (size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<char>((i * 131) ^ (i >> 9));
  std::thread writer([&] {
    size_t off = 0;
    while (off < sent.size()) {
      ssize_t n = ::send(fd, sent.data() + off, std::min<size_t>(50000, sent.size() - off), MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    ::shutdown(fd, SHUT_WR);
  });
  std::vector<char> buf(65536);
  auto deadline = SC::now() + std::chrono::seconds(20);
  while (got.size() < sent.size() && SC::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n <= 0) break;
    got.insert(got.end(), buf.begin(), buf.begin() + n);
  }
  writer.join();
  ::close(fd);
  echo.join();
  ::close(lfd);
  EXPECT_TRUE(got == sent) << "got " << got.size() << " of " << sent.size() << " bytes";
}

// Sends for `seconds` through the relay to a sink; returns the sink's payload Mbit/s.
double measure(uint16_t relay_port, int sink_fd, double seconds) {
  std::atomic<double> mbps{0};
  std::thread sink([&] {
    pollfd p{sink_fd, POLLIN, 0};
    if (::poll(&p, 1, 10000) <= 0) return;
    int c = ::accept(sink_fd, nullptr, nullptr);
    std::vector<char> buf(65536);
    double bytes = 0;
    SC::time_point first{}, last{};
    bool started = false;
    ssize_t n;
    while ((n = ::read(c, buf.data(), buf.size())) > 0) {
      last = SC::now();
      if (!started) {
        started = true;
        first = last;
      } else {
        bytes += static_cast<double>(n);
      }
    }
    ::close(c);
    double s = std::chrono::duration<double>(last - first).count();
    mbps = s > 0 ? bytes * 8 / s / 1e6 : 0;
  });
  int fd = connect_to(relay_port);
  std::vector<char> buf(65536, 'x');
  auto end = SC::now() + std::chrono::duration<double>(seconds);
  while (fd >= 0 && SC::now() < end)
    if (::send(fd, buf.data(), buf.size(), MSG_NOSIGNAL) <= 0) break;
  if (fd >= 0) {
    ::shutdown(fd, SHUT_WR);
    char c;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20000) > 0) (void)::read(fd, &c, 1);
    ::close(fd);
  }
  sink.join();
  return mbps;
}

TEST(ShapingRelay, HundredMbitLinkMovesAHundredMbit) {
  uint16_t node_port = 0;
  int lfd = listen_any(node_port);
  RelayRoute r = route_to(node_port, 100);
  r.latency_ms = 0.5;
  RelayRunner relay(r);
  double mbps = measure(relay.relay->port(), lfd, 2.0);
  ::close(lfd);
  RecordProperty("relay_100_mbps", std::to_string(mbps));
  std::printf("relay, 100 Mbit/s link: %.1f Mbit/s payload\n", mbps);
  EXPECT_GE(mbps, 90);
  EXPECT_LE(mbps, 110);
}

TEST(ShapingRelay, CutStopsForwardingAndHealResumes) {
  uint16_t node_port = 0;
  int lfd = listen_any(node_port);
  RelayRunner relay(route_to(node_port, 100));
  boost::asio::post(relay.io, [&] { relay.relay->set_cut(true); });
  int fd = connect_to(relay.relay->port());
  ASSERT_GE(fd, 0);
  pollfd p{lfd, POLLIN, 0};
  ASSERT_GT(::poll(&p, 1, 5000), 0);
  int c = ::accept(lfd, nullptr, nullptr);
  ASSERT_EQ(::send(fd, "hello", 5, MSG_NOSIGNAL), 5);
  pollfd q{c, POLLIN, 0};
  EXPECT_EQ(::poll(&q, 1, 300), 0) << "data crossed a cut link";
  boost::asio::post(relay.io, [&] { relay.relay->set_cut(false); });
  ASSERT_GT(::poll(&q, 1, 5000), 0);
  char buf[8] = {};
  EXPECT_EQ(::read(c, buf, sizeof buf), 5);
  EXPECT_EQ(std::string(buf, 5), "hello");
  ::close(c);
  ::close(fd);
  ::close(lfd);
}

// Heartbeat datagrams (UDP at the relay's port number) reach the node's UDP
// port and its reply comes back, with no link queue in between; a cut link
// drops them.
TEST(ShapingRelay, ForwardsDatagramsBothWaysUnlessCut) {
  uint16_t node_port = 0, client_port = 0;
  int node = udp_any(node_port), client = udp_any(client_port);
  // The node's UDP port (no TCP needed here), on a slow link: a shaped
  // datagram would take ms.
  RelayRunner relay(route_to(node_port, 1));
  sockaddr_in to = loopback(relay.relay->port());
  auto ping = [&](const std::string& text) {
    return ::sendto(client, text.data(), text.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
           static_cast<ssize_t>(text.size());
  };
  // The node answers from its socket; the relay sends the answer to whoever asked.
  auto answer = [&](int wait_ms) -> std::string {
    pollfd p{node, POLLIN, 0};
    if (::poll(&p, 1, wait_ms) <= 0) return "";
    char buf[64];
    sockaddr_in from{};
    socklen_t len = sizeof from;
    ssize_t n = ::recvfrom(node, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
    std::string text(buf, n > 0 ? static_cast<size_t>(n) : 0);
    ::sendto(node, ("re:" + text).data(), text.size() + 3, 0, reinterpret_cast<sockaddr*>(&from), len);
    return text;
  };
  auto reply = [&](int wait_ms) -> std::string {
    pollfd p{client, POLLIN, 0};
    if (::poll(&p, 1, wait_ms) <= 0) return "";
    char buf[64];
    ssize_t n = ::recv(client, buf, sizeof buf, 0);
    return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
  };
  ASSERT_TRUE(ping("hb1"));
  EXPECT_EQ(answer(5000), "hb1");
  EXPECT_EQ(reply(5000), "re:hb1");
  boost::asio::post(relay.io, [&] { relay.relay->set_cut(true); });
  // The cut is posted to the relay's thread: wait until it drops pings.
  bool dropped = false;
  for (int i = 0; i < 50 && !dropped; ++i) {
    ASSERT_TRUE(ping("cut"));
    dropped = answer(100).empty();
    if (!dropped) (void)reply(1000);  // answered before the cut took effect
  }
  EXPECT_TRUE(dropped) << "a datagram crossed a cut link";
  EXPECT_TRUE(answer(300).empty()) << "a datagram crossed a cut link";
  boost::asio::post(relay.io, [&] { relay.relay->set_cut(false); });
  std::string got;
  for (int i = 0; i < 50 && got.empty(); ++i) {
    ASSERT_TRUE(ping("hb2"));
    got = answer(100);
  }
  EXPECT_EQ(got, "hb2");
  EXPECT_EQ(reply(5000), "re:hb2");
  ::close(node);
  ::close(client);
}

TEST(ShapingRelay, BindFailureNamesTheAddress) {
  boost::asio::io_context io;
  RelayRoute r;
  r.id = "x";
  r.listen_host = "203.0.113.1";  // not an address of this machine: bind fails
  try {
    ShapingRelay relay(io, r);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("203.0.113.1"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace asteroid::testbed
