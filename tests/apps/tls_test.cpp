// Mutual TLS with real node processes (actors/tls.h, docs/security.md):
// who may join a job, what a stranger on the network gets, and what a
// device's own certificate does not allow. The equivalence of a TLS job
// with single-device training is in tests/actors/runtime_test.cpp.
#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <functional>
#include <set>
#include <sstream>
#include <unistd.h>
#include <string>
#include <thread>

#include "actors/ask.h"
#include "actors/connect.h"
#include "actors/heartbeat_datagram.h"
#include "actors/system_config.h"
#include "actors/tls.h"
#include "actors/transport.h"
#include "apps/security/certificates.h"
#include "apps/testbed/process.h"
#include "planner/json_io.h"
#include "tests/support/local_nodes.h"
#include "tests/support/temp_dir.h"

namespace asteroid {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using test_support::LocalNodes;
using test_support::TempDir;
using Clock = std::chrono::steady_clock;

// A cluster's authority in DIR with certificates for `ids`.
std::string make_authority(const std::string& dir, const std::vector<std::string>& ids) {
  apps::security::init_authority(dir);
  for (const auto& id : ids) apps::security::issue_certificate(dir, id);
  return dir;
}

// What a TLS client presenting `cert` (empty: none) gets from the node at
// 127.0.0.1:port: "accepted" with the gateway's preamble (and whether it
// holds a control token), or the error that ended it.
struct Attempt {
  bool accepted = false;
  bool token = false;
  std::string error;
};
Attempt tls_attempt(uint16_t port, const std::string& ca, const std::string& cert_dir, const std::string& id) {
  asio::io_context io;
  ssl::context context(ssl::context::tls_client);
  context.load_verify_file(ca);
  if (!id.empty()) {
    context.use_certificate_chain_file(cert_dir + "/" + id + ".pem");
    context.use_private_key_file(cert_dir + "/" + id + ".key", ssl::context::pem);
  }
  context.set_verify_mode(ssl::verify_peer);
  ssl::stream<tcp::socket> stream(io, context);
  Attempt out;
  boost::system::error_code ec;
  stream.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (!ec) stream.handshake(ssl::stream_base::client, ec);
  // TLS 1.3: the client's handshake ends before the server has checked the
  // client's certificate; a refusal shows on the first read.
  std::array<char, 36> preamble{};
  if (!ec) asio::read(stream, asio::buffer(preamble), ec);
  if (ec) {
    out.error = ec.message();
    return out;
  }
  out.accepted = std::string(preamble.data(), 4) == "AST1";
  out.token = std::string(preamble.begin() + 4, preamble.end()) != std::string(32, '\0');
  return out;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Whether `condition` held within `timeout`, checked every 50 ms.
bool eventually(const std::function<bool()>& condition, std::chrono::seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!condition()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling a condition, not waiting for an event
  }
  return true;
}

// A node whose whole output goes to a log file the test reads (LocalNodes
// keeps only its first line); stopped by pid when the test ends.
struct LoggedNode {
  LoggedNode(const std::string& id, const std::string& log, const std::vector<std::string>& args) : log(log) {
    testbed::SpawnOptions o;
    o.argv = {ASTEROID_BIN, "node", "--host", "127.0.0.1", "--port", "0", "--id", id};
    o.argv.insert(o.argv.end(), args.begin(), args.end());
    o.output_file = log;
    o.die_with_parent = true;
    process = testbed::Subprocess::spawn(o);
    const std::string marker = "listening on 127.0.0.1:";
    if (!eventually([&] { return read_text(log).find(marker) != std::string::npos || !process.running(); },
                    std::chrono::seconds(30)) ||
        !process.running()) {
      throw std::runtime_error("node " + id + " did not start: " + read_text(log));
    }
    const std::string text = read_text(log);
    device.id = id;
    device.host = "127.0.0.1";
    device.port = std::stoi(text.substr(text.find(marker) + marker.size()));
    device.memory_mb = 4096;
  }
  ~LoggedNode() { process.stop(testbed::Millis(5000)); }
  // The log's lines holding `text`.
  std::vector<std::string> lines_with(const std::string& text) const {
    std::vector<std::string> found;
    std::istringstream lines(read_text(log));
    for (std::string line; std::getline(lines, line);)
      if (line.find(text) != std::string::npos) found.push_back(line);
    return found;
  }
  std::string log;
  testbed::Subprocess process;
  planner::Device device;
};

TEST(AllowList, NamesIdsAndOptionallyTheirCertificates) {
  const auto list = actors::parse_allow_list("coordinator, nx-0 ,tx2-0=" + std::string(64, 'a'));
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].id, "coordinator");
  EXPECT_EQ(list[1].id, "nx-0");
  EXPECT_EQ(list[2].sha256, std::string(64, 'A'));
  const std::optional<std::vector<actors::AllowEntry>> allow = list;
  std::string colons;
  for (int i = 0; i < 32; ++i) colons += std::string(i ? ":" : "") + "aa";
  EXPECT_EQ(actors::allow_list_refusal(allow, "nx-0", "whatever"), "");
  EXPECT_EQ(actors::allow_list_refusal(allow, "tx2-0", colons), "") << "colons and case do not matter";
  EXPECT_NE(actors::allow_list_refusal(allow, "tx2-0", "BB" + colons.substr(2)).find("not the one the allow-list names"),
            std::string::npos);
  EXPECT_NE(actors::allow_list_refusal(allow, "nano-0", colons).find("\"nano-0\" is not on the allow-list"),
            std::string::npos);
  EXPECT_EQ(actors::allow_list_refusal(std::nullopt, "anyone", colons), "") << "no list: the authority decides";
  EXPECT_THROW(actors::parse_allow_list("a,b/c"), std::invalid_argument);
  EXPECT_THROW(actors::parse_allow_list("a=12"), std::invalid_argument) << "a fingerprint is 32 bytes";
}

TEST(TlsNodes, OnlyListedDevicesOfTheAuthorityJoinAndStrangersAreRefusedWhileTheJobTrains) {
  TempDir dir("asteroid-tls");
  const std::string tls = make_authority(dir.file("tls"), {"a", "b", "y", "z"});
  const std::string other = make_authority(dir.file("other"), {"x"});
  const std::string allow_ab = "--allow=coordinator,a,b";
  LoggedNode a_node("a", dir.file("a.log"), {"--tls-dir", tls, allow_ab});
  LocalNodes b_node({"b"}, {"--tls-dir", tls, allow_ab});
  LocalNodes stranger({"x"}, {"--tls-dir", other});  // another cluster's device
  LocalNodes unlisted({"y"}, {"--tls-dir", tls});    // ours, but not on the job's list
  LocalNodes plain({"w"});                           // no certificate at all: plain TCP

  planner::Cluster cluster = b_node.cluster();
  cluster.devices.insert(cluster.devices.begin(), a_node.device);
  cluster.devices.push_back(stranger.cluster().devices[0]);
  cluster.devices.push_back(unlisted.cluster().devices[0]);
  cluster.devices.push_back(plain.cluster().devices[0]);
  cluster.tls_dir = tls;
  cluster.tls_allow = {"a=" + actors::certificate_sha256(tls + "/a.pem"), "b", "x", "w"};
  planner::save_cluster(cluster, dir.file("cluster.json"));

  testbed::SpawnOptions train;
  train.argv = {ASTEROID_BIN, "train", "--cluster", dir.file("cluster.json"), "--skip-unreachable", "--strategy", "dp",
                "--model", "fmnist-cnn", "--rounds", "40", "--out", dir.file("run"), "--progress", "plain",
                "--baseline-rounds", "0", "--no-plots"};
  train.output_file = dir.file("train.log");
  train.die_with_parent = true;
  auto job = testbed::Subprocess::spawn(train);

  // Once the job trains, strangers knock at node a.
  eventually([&] { return read_text(dir.file("run/metrics.jsonl")).find("\"round\"") != std::string::npos || !job.running(); },
             std::chrono::minutes(3));
  ASSERT_TRUE(job.running()) << read_text(dir.file("train.log"));
  const uint16_t a = static_cast<uint16_t>(a_node.device.port);
  const Attempt from_other_authority = tls_attempt(a, tls + "/ca.pem", other, "x");
  const Attempt without_certificate = tls_attempt(a, tls + "/ca.pem", "", "");
  const Attempt not_on_the_list = tls_attempt(a, tls + "/ca.pem", tls, "z");
  const Attempt device_b = tls_attempt(a, tls + "/ca.pem", tls, "b");
  const Attempt coordinator = tls_attempt(a, tls + "/ca.pem", tls, "coordinator");
  EXPECT_FALSE(from_other_authority.accepted);
  EXPECT_FALSE(without_certificate.accepted);
  EXPECT_FALSE(not_on_the_list.accepted);
  EXPECT_TRUE(device_b.accepted) << device_b.error;
  EXPECT_FALSE(device_b.token) << "a device gets no control token";
  EXPECT_TRUE(coordinator.accepted) << coordinator.error;
  EXPECT_TRUE(coordinator.token);

  std::vector<std::string> refusals;
  eventually([&] { return (refusals = a_node.lines_with("refused a connection from 127.0.0.1:")).size() >= 3; },
             std::chrono::seconds(30));
  ASSERT_EQ(refusals.size(), 3u) << read_text(a_node.log);
  std::string all;
  for (const auto& line : refusals) all += line + "\n";
  EXPECT_NE(all.find("is not from this cluster's authority"), std::string::npos) << all;
  EXPECT_NE(all.find("certificate"), std::string::npos) << all;  // "peer did not return a certificate"
  EXPECT_NE(all.find("\"z\" is not on the allow-list"), std::string::npos) << all;

  ASSERT_TRUE(job.wait_for(testbed::Millis(300000)).has_value());
  const std::string log = read_text(dir.file("train.log"));
  ASSERT_EQ(job.exit_status(), 0) << log;
  const auto summary = nlohmann::json::parse(read_text(dir.file("run/summary.json")));
  EXPECT_EQ(summary.at("rounds").get<int>(), 40);
  std::set<std::string> devices;
  for (const auto& stage : planner::load_plan(dir.file("run/plan.json")).stages)
    for (const auto& d : stage.devices) devices.insert(d.id);
  EXPECT_EQ(devices, (std::set<std::string>{"a", "b"}));
  EXPECT_NE(log.find("x (TLS: its certificate"), std::string::npos) << log;
  EXPECT_NE(log.find("y (TLS: \"y\" is not on the allow-list"), std::string::npos) << log;
  EXPECT_NE(log.find("w (TLS: "), std::string::npos) << log;
}

// CPU seconds a process has used (utime + stime).
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string f;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i)
    if (i == 14 || i == 15) ticks += std::stod(f);
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

TEST(TlsNodes, APlainClientGetsNothingAndASilentOneCostsTheNodeNoCpu) {
  TempDir dir("asteroid-tls");
  const std::string tls = make_authority(dir.file("tls"), {"a"});
  LocalNodes nodes({"a"}, {"--tls-dir", tls});
  const uint16_t port = static_cast<uint16_t>(nodes.cluster().devices[0].port);

  asio::io_context io;
  // Garbage, then what a CAF client would send first: no byte of CAF or of
  // the node comes back (at most a TLS alert), and the node closes.
  for (const std::string& hello : {std::string("GET / HTTP/1.0\r\n\r\n"),
                                   std::string("\x00\x00\x00\x28\x00\x00\x00\x00", 8) + std::string(40, '\x01')}) {
    tcp::socket plain(io);
    plain.connect({asio::ip::make_address("127.0.0.1"), port});
    asio::write(plain, asio::buffer(hello));
    std::string reply;
    boost::system::error_code ec;
    std::array<char, 4096> chunk{};
    while (!ec) {
      const size_t n = plain.read_some(asio::buffer(chunk), ec);
      reply.append(chunk.data(), n);
    }
    EXPECT_LE(reply.size(), 7u) << "more than a TLS alert came back";
    if (!reply.empty()) {
      EXPECT_EQ(reply[0], '\x15') << "not a TLS alert record";
    }
  }
  // A client that connects and says nothing: the node spends (almost) no
  // CPU on it while it waits (CAF 0.17.6's own TLS spun at 64 % of a core).
  tcp::socket silent(io);
  silent.connect({asio::ip::make_address("127.0.0.1"), port});
  const pid_t pid = nodes.process("a").pid();
  const double before = cpu_seconds(pid);
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(2));  // measuring an interval, not waiting for an event
  const double used = cpu_seconds(pid) - before;
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_LT(used / wall, 0.10) << used << " s of CPU in " << wall << " s";

  // And the node still serves its coordinator.
  planner::Cluster cluster = nodes.cluster();
  cluster.tls_dir = tls;
  actors::AsteroidConfig config(actors::coordinator_options(cluster));
  caf::actor_system system(config);
  actors::ScopedMailbox self(system);
  std::string failure;
  const auto node = actors::connect_node(self, cluster.devices[0], std::chrono::seconds(10), failure);
  ASSERT_TRUE(node) << failure;
  const auto info = actors::ask(self, node->actor, messages::Hello{}, std::chrono::seconds(10), failure);
  ASSERT_TRUE(info) << failure;
  EXPECT_EQ(std::get<messages::NodeInfo>(*info).node_id, "a");
  EXPECT_GE(std::get<messages::NodeInfo>(*info).refused_connections, 2u);
}

TEST(TlsNodes, ADeviceCertificateCanNeitherSpawnNorControlNorStopTheNode) {
  TempDir dir("asteroid-tls");
  const std::string tls = make_authority(dir.file("tls"), {"a", "b"});
  LocalNodes nodes({"a"}, {"--tls-dir", tls});
  const planner::Device a = nodes.cluster().devices[0];

  // A process holding device b's certificate: it connects (b is a device
  // of the cluster) but gets no control token.
  actors::SystemOptions as_b;
  as_b.tls = std::make_shared<actors::TlsTransport>(actors::TlsIdentity{tls, "b", std::nullopt});
  actors::AsteroidConfig config_b(as_b);
  caf::actor_system system_b(config_b);
  caf::scoped_actor b(system_b);
  actors::ScopedMailbox asker(system_b);
  std::string failure;
  const auto node = actors::connect_node(asker, a, std::chrono::seconds(10), failure);
  ASSERT_TRUE(node) << failure;
  EXPECT_TRUE(actors::authorization_for(system_b, node->id).empty());

  const auto stage = actors::remote_spawn_actor(asker, node->id, "stage", std::chrono::seconds(10));
  if (stage.actor) {  // CAF hands out the actor, which ends at once
    b->monitor(stage.actor);
    bool down = false;
    b->receive([&](const caf::down_msg&) { down = true; }, caf::after(std::chrono::seconds(10)) >> [] {});
    EXPECT_TRUE(down) << "the stage spawned for a device lives on";
  }
  for (const messages::Message& control :
       std::vector<messages::Message>{messages::Peers{}, messages::ReplicaRequest{"job", 0, 1, 0},
                                      messages::KeptRequest{"job"}, messages::Release{"job", {}}}) {
    const auto reply = actors::ask(asker, node->actor, control, std::chrono::seconds(10), failure);
    EXPECT_FALSE(reply) << messages::kind_name(control) << " was answered";
    EXPECT_NE(failure.find("only from an authenticated coordinator"), std::string::npos) << failure;
  }
  caf::anon_send_exit(node->actor, caf::exit_reason::user_shutdown);
  b->send_exit(node->actor, caf::exit_reason::kill);

  // The coordinator's certificate may, and the node lives on and counts.
  planner::Cluster cluster = nodes.cluster();
  cluster.tls_dir = tls;
  actors::AsteroidConfig config(actors::coordinator_options(cluster));
  caf::actor_system system(config);
  actors::ScopedMailbox self(system);
  const auto as_coordinator = actors::connect_node(self, a, std::chrono::seconds(10), failure);
  ASSERT_TRUE(as_coordinator) << failure;
  EXPECT_EQ(actors::authorization_for(system, as_coordinator->id).size(), 32u);
  const auto kept = actors::ask(self, as_coordinator->actor, messages::KeptRequest{"job"}, std::chrono::seconds(10),
                                failure);
  ASSERT_TRUE(kept) << failure;
  EXPECT_TRUE(std::holds_alternative<messages::KeptList>(*kept));
  const auto spawned = actors::remote_spawn_actor(self, as_coordinator->id, "stage", std::chrono::seconds(10));
  ASSERT_TRUE(spawned.actor) << spawned.error;
  self.self()->monitor(spawned.actor);
  bool down = false;
  caf::message_handler downs{[&](const caf::down_msg&) { down = true; }};
  self.receive(downs, std::chrono::milliseconds(500));
  EXPECT_FALSE(down) << "the coordinator's stage ended at once";
  // The stage itself answers a state request (its weights) and takes an
  // assignment only with the coordinator's token in the envelope, whoever
  // holds its handle.
  const auto bare_request = actors::ask(self, spawned.actor, caf::make_message(messages::to_wire(messages::StateRequest{0})),
                                        std::chrono::seconds(10), failure);
  EXPECT_FALSE(bare_request);
  EXPECT_NE(failure.find("takes stateRequest requests only from an authenticated coordinator"), std::string::npos)
      << failure;
  const auto with_token = actors::ask(self, spawned.actor, messages::StateRequest{0}, std::chrono::seconds(10), failure);
  EXPECT_FALSE(with_token) << "an empty stage has no state";
  EXPECT_NE(failure.find("not deployed yet"), std::string::npos) << "the token lets the request through: " << failure;
  messages::StageAssignment assignment;
  assignment.model = "fmnist-cnn";
  assignment.layer_end = 1;
  assignment.group = {{"a", 8}};
  assignment.batch = assignment.microbatch_size = 8;
  const auto bare_assignment = actors::ask(
      self, spawned.actor,
      caf::make_message(messages::to_wire(assignment), std::vector<caf::actor>{}, std::vector<caf::actor>{self.handle()},
                        std::vector<caf::actor>{}, std::vector<caf::actor>{}, self.handle()),
      std::chrono::seconds(10), failure);
  EXPECT_FALSE(bare_assignment);
  EXPECT_NE(failure.find("takes assignments only from an authenticated coordinator"), std::string::npos) << failure;
  self.self()->send_exit(spawned.actor, caf::exit_reason::user_shutdown);

  const auto info = actors::ask(self, as_coordinator->actor, messages::Hello{}, std::chrono::seconds(10), failure);
  ASSERT_TRUE(info) << failure;
  // From device b a spawn, four control messages and two exit messages; from
  // this process an assignment and a state request without the token.
  EXPECT_EQ(std::get<messages::NodeInfo>(*info).refused_control, 9u);
  EXPECT_TRUE(nodes.process("a").running());

  // Heartbeat datagrams: the coordinator's (MAC under the node's token) and
  // a pipeline peer's (MAC under the job's key, given with the peers) get
  // an answer with a MAC under the same key; a wrong MAC gets none, no MAC
  // an answer without one.
  const std::string token = actors::authorization_for(system, as_coordinator->id);
  const std::string job_key(32, '\x42');
  const auto peers = actors::ask(self, as_coordinator->actor,
                                 messages::Peers{{{"a", a.host, static_cast<uint16_t>(a.port), job_key},
                                                  {"b", "127.0.0.1", 1, job_key}}},
                                 std::chrono::seconds(20), failure);
  ASSERT_TRUE(peers) << failure;
  std::mutex mutex;
  std::map<uint64_t, std::string> answers;  // sequence -> under which key the answer is signed
  actors::HeartbeatPinger pinger([&](const messages::Heartbeat& reply, const std::string& mac, auto) {
    std::lock_guard<std::mutex> lock(mutex);
    if (reply.node_id != "a") return;
    answers[reply.sequence] = actors::heartbeat_mac_matches(token, reply, mac)     ? "token"
                              : actors::heartbeat_mac_matches(job_key, reply, mac) ? "job key"
                              : mac.empty()                                        ? "none"
                                                                                   : "bad";
  });
  const auto udp = actors::resolve_datagram_endpoint(a.host, static_cast<uint16_t>(a.port));
  ASSERT_TRUE(udp);
  ASSERT_TRUE(pinger.send(*udp, messages::Heartbeat{"monitor", 1, 0, {}}, nullptr, token));
  ASSERT_TRUE(pinger.send(*udp, messages::Heartbeat{"monitor", 2, 0, {}}, nullptr, std::string(32, 'x')));
  ASSERT_TRUE(pinger.send(*udp, messages::Heartbeat{"b", 3, 0, {}}));
  ASSERT_TRUE(pinger.send(*udp, messages::Heartbeat{"b", 4, 0, {}}, nullptr, job_key));
  eventually(
      [&] {
        std::lock_guard<std::mutex> lock(mutex);
        return answers.count(1) && answers.count(3) && answers.count(4);
      },
      std::chrono::seconds(10));
  std::lock_guard<std::mutex> lock(mutex);
  EXPECT_EQ(answers[1], "token");
  EXPECT_EQ(answers.count(2), 0u) << "a heartbeat with a wrong MAC was answered";
  EXPECT_EQ(answers[3], "none");
  EXPECT_EQ(answers[4], "job key");
}

}  // namespace
}  // namespace asteroid
