// Heartbeats as datagrams (actors/heartbeat_datagram.h): what a node answers
// and what it drops, on real node processes; and the heartbeat monitor on
// both transports: a live node stays alive, a frozen one is lost within the
// deadline and comes back when thawed.
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "actors/atoms.h"
#include "actors/heartbeat_datagram.h"
#include "actors/system_config.h"
#include "messages/codec.h"
#include "supervision/heartbeat_monitor.h"
#include "tests/support/local_nodes.h"

namespace asteroid::supervision {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test_support::LocalNodes;

std::vector<char> heartbeat_bytes(uint64_t sequence) {
  return messages::encode(messages::Heartbeat{"test", sequence, 0, {}});
}

// Malformed datagrams, each named.
std::vector<std::pair<std::string, std::vector<char>>> malformed() {
  const std::vector<char> good = heartbeat_bytes(7);
  const std::string text = "not a Cap'n Proto message at all";
  return {
      {"empty", {}},
      {"text", std::vector<char>(text.begin(), text.end())},
      {"truncated by a word", std::vector<char>(good.begin(), good.end() - 8)},
      {"not whole words", std::vector<char>(good.begin(), good.end() - 3)},
      {"another kind", messages::encode(messages::Hello{})},
      {"oversized", std::vector<char>(4096, 0)},
  };
}

TEST(HeartbeatDatagram, TheAnswerCarriesTheNodesIdAndTheSameSequence) {
  const auto request = heartbeat_bytes(42);
  std::string why;
  auto answer = actors::answer_heartbeat(request.data(), request.size(), "nano-0", &why);
  ASSERT_TRUE(answer) << why;
  auto reply = actors::read_heartbeat(answer->data(), answer->size(), &why);
  ASSERT_TRUE(reply) << why;
  EXPECT_EQ(reply->node_id, "nano-0");
  EXPECT_EQ(reply->sequence, 42u);
  EXPECT_LE(answer->size(), actors::kMaxHeartbeatBytes);
}

TEST(HeartbeatDatagram, WithKeysOnlyTheirHoldersAskAndAnswersCarryTheRequestsKey) {
  const std::string key(32, '\x5a'), other(32, '\x33');
  const messages::Heartbeat request{"monitor", 7, 0, {}};
  const auto signed_request = messages::encode(request, actors::heartbeat_mac(key, request));
  std::string why, mac;
  auto answer =
      actors::answer_heartbeat(signed_request.data(), signed_request.size(), "nano-0", &why, {"tx2-0"}, {other, key});
  ASSERT_TRUE(answer) << why;
  auto reply = actors::read_heartbeat(answer->data(), answer->size(), &why, &mac);
  ASSERT_TRUE(reply) << why;
  EXPECT_TRUE(actors::heartbeat_mac_matches(key, *reply, mac));
  EXPECT_FALSE(actors::heartbeat_mac_matches(other, *reply, mac));
  messages::Heartbeat forged = *reply;
  forged.unreachable = {};  // someone hiding a partition
  EXPECT_FALSE(actors::heartbeat_mac_matches(key, forged, mac));
  forged = *reply;
  forged.sequence = 8;  // an old answer replayed for a new heartbeat
  EXPECT_FALSE(actors::heartbeat_mac_matches(key, forged, mac));

  // A request with someone else's MAC is not answered.
  const auto wrong = messages::encode(request, actors::heartbeat_mac(other, request));
  EXPECT_FALSE(actors::answer_heartbeat(wrong.data(), wrong.size(), "nano-0", &why, {}, {key}));
  EXPECT_NE(why.find("under no key of this node"), std::string::npos) << why;
  // One without a MAC (a node without TLS) is answered without one.
  const auto plain = heartbeat_bytes(9);
  answer = actors::answer_heartbeat(plain.data(), plain.size(), "nano-0", &why, {}, {key});
  ASSERT_TRUE(answer) << why;
  ASSERT_TRUE(actors::read_heartbeat(answer->data(), answer->size(), &why, &mac));
  EXPECT_TRUE(mac.empty());
}

TEST(HeartbeatDatagram, AnythingButAWellFormedHeartbeatIsNotAnswered) {
  for (const auto& [name, bytes] : malformed()) {
    std::string why;
    EXPECT_FALSE(actors::answer_heartbeat(bytes.data(), bytes.size(), "n", &why)) << name;
    EXPECT_FALSE(why.empty()) << name << ": dropped without a reason";
  }
  // Every single corrupted byte: an answer or a reason, never a crash.
  const auto good = heartbeat_bytes(9);
  for (size_t i = 0; i < good.size(); ++i) {
    for (unsigned char flip : {0x01, 0x80, 0xff}) {
      auto bytes = good;
      bytes[i] = static_cast<char>(bytes[i] ^ flip);
      std::string why;
      auto answer = actors::answer_heartbeat(bytes.data(), bytes.size(), "n", &why);
      EXPECT_TRUE(answer || !why.empty()) << "byte " << i;
    }
  }
}

// The test's own UDP socket towards a node's port, for raw bytes.
class UdpClient {
 public:
  explicit UdpClient(int port) : fd_(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
    to_.sin_family = AF_INET;
    to_.sin_port = htons(static_cast<uint16_t>(port));
    to_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  }
  ~UdpClient() { ::close(fd_); }
  bool send(const std::vector<char>& bytes) {
    return ::sendto(fd_, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&to_), sizeof to_) ==
           static_cast<ssize_t>(bytes.size());
  }
  std::optional<std::vector<char>> receive(std::chrono::milliseconds wait) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) return std::nullopt;
    std::vector<char> buffer(2048);
    const ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), 0);
    if (n < 0) return std::nullopt;
    buffer.resize(static_cast<size_t>(n));
    return buffer;
  }

 private:
  int fd_;
  sockaddr_in to_{};
};

TEST(HeartbeatDatagram, ARealNodeAnswersAndDropsMalformedDatagrams) {
  LocalNodes nodes({"n0"});
  UdpClient client(nodes.cluster().devices[0].port);  // UDP at the node's (TCP) port number
  ASSERT_TRUE(client.send(heartbeat_bytes(1)));
  auto first = client.receive(5s);
  ASSERT_TRUE(first) << "no answer to a heartbeat datagram";
  std::string why;
  auto reply = actors::read_heartbeat(first->data(), first->size(), &why);
  ASSERT_TRUE(reply) << why;
  EXPECT_EQ(reply->node_id, "n0");
  EXPECT_EQ(reply->sequence, 1u);
  for (const auto& [name, bytes] : malformed()) ASSERT_TRUE(client.send(bytes)) << name;
  ASSERT_TRUE(client.send(heartbeat_bytes(2)));
  // Datagrams are handled in order: an answer to a malformed one would come first.
  auto next = client.receive(5s);
  ASSERT_TRUE(next) << "the node stopped answering after malformed datagrams";
  reply = actors::read_heartbeat(next->data(), next->size(), &why);
  ASSERT_TRUE(reply) << why;
  EXPECT_EQ(reply->sequence, 2u) << "a malformed datagram was answered";
  EXPECT_FALSE(client.receive(200ms)) << "an answer too many";
  EXPECT_TRUE(nodes.process("n0").running());
}

// ---- the monitor ---------------------------------------------------------------------

caf::actor connect(caf::scoped_actor& self, const planner::Device& d) {
  caf::actor node;
  self->request(self->home_system().middleman().actor_handle(), 5s, caf::connect_atom::value, d.host,
                static_cast<uint16_t>(d.port))
      .receive([&](const caf::node_id&, caf::strong_actor_ptr& ptr,
                   const std::set<std::string>&) { node = caf::actor_cast<caf::actor>(std::move(ptr)); },
               [&](caf::error& e) { ADD_FAILURE() << "cannot connect: " << self->home_system().render(e); });
  return node;
}

// Waits for (lost_atom, id) or (back_atom, id), up to `wait`; returns which
// ("lost"/"back") or "" on timeout.
std::string next_event(caf::scoped_actor& self, std::chrono::milliseconds wait) {
  std::string event;
  self->receive([&](actors::lost_atom, const std::string&) { event = "lost"; },
                [&](actors::back_atom, const std::string&) { event = "back"; },
                caf::after(wait) >> [] {});
  return event;
}

class MonitorOnTransport : public ::testing::TestWithParam<HeartbeatTransport> {};

TEST_P(MonitorOnTransport, ALiveNodeStaysAliveAFrozenOneIsLostAndComesBack) {
  LocalNodes nodes({"n0"});
  const planner::Device device = nodes.cluster().devices[0];
  std::atomic<int> round_trips{0};  // outlives the actor system, which outlives the monitor
  actors::AsteroidConfig config;
  caf::actor_system system(config);
  caf::scoped_actor self{system};
  caf::actor node = connect(self, device);
  ASSERT_TRUE(node);
  MonitorSetup setup;
  setup.options.transport = GetParam();
  setup.listener = caf::actor_cast<caf::actor>(self);
  setup.nodes = {{"n0", node}};
  setup.addresses = setup.endpoints = {{"n0", device}};
  setup.reconnect_every = 100ms;
  setup.on_round_trip = [&](const std::string&, std::chrono::microseconds) { ++round_trips; };
  auto monitor = spawn_heartbeat_monitor(system, setup);
  struct Stop {
    heartbeat_monitor_actor monitor;
    testbed::Subprocess& node;
    ~Stop() {
      node.signal(SIGCONT);
      caf::anon_send_exit(monitor, caf::exit_reason::user_shutdown);
    }
  } stop{monitor, nodes.process("n0")};

  // Alive: heartbeats answered (10 a second), nothing lost.
  const auto started = Clock::now();
  while (round_trips < 10 && Clock::now() - started < 5s) ASSERT_EQ(next_event(self, 50ms), "");
  EXPECT_GE(round_trips, 10) << "heartbeats unanswered";

  // Frozen: lost after 700 ms of silence since its last answer (at most an
  // interval before the freeze), not before.
  nodes.process("n0").signal(SIGSTOP);
  const auto frozen = Clock::now();
  ASSERT_EQ(next_event(self, 5s), "lost");
  const auto detected_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - frozen).count();
  EXPECT_GE(detected_ms, (setup.options.deadline - setup.options.interval).count());
  EXPECT_LT(detected_ms, (setup.options.deadline + 1500ms).count());

  // Thawed: back, and answering again.
  nodes.process("n0").signal(SIGCONT);
  ASSERT_EQ(next_event(self, 10s), "back");
  const int answered = round_trips;
  const auto thawed = Clock::now();
  while (round_trips < answered + 5 && Clock::now() - thawed < 5s) ASSERT_EQ(next_event(self, 50ms), "");
  EXPECT_GE(round_trips, answered + 5);
}

INSTANTIATE_TEST_SUITE_P(HeartbeatMonitor, MonitorOnTransport,
                         ::testing::Values(HeartbeatTransport::datagram, HeartbeatTransport::actor),
                         [](const ::testing::TestParamInfo<HeartbeatTransport>& info) {
                           return info.param == HeartbeatTransport::datagram ? "Datagram" : "Actor";
                         });

}  // namespace
}  // namespace asteroid::supervision
