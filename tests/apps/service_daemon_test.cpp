// `asteroid serve` as a user runs it: the real binary on 127.0.0.1 (a port
// it picks, read from its ready file) over real node processes, asked
// over real HTTP. Submit, watch the round advance, cancel, resubmit; the
// daemon killed outright mid-job and started again; a device killed under
// a served job; a Prometheus server scraping it; the dashboard in headless
// Chromium. Every process a test starts is stopped by pid, also on failure.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <thread>

#include "apps/service/api_token.h"
#include "apps/service/http.h"
#include "apps/testbed/process.h"
#include "planner/json_io.h"
#include "tests/support/local_nodes.h"
#include "tests/support/temp_dir.h"

namespace asteroid::apps::service {
namespace {

namespace fs = std::filesystem;
using test_support::LocalNodes;
using test_support::TempDir;
using Clock = std::chrono::steady_clock;

// Polls `ready` every 200 ms until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& ready, std::chrono::seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return ready();
}

std::string tail_of(const std::string& path) {
  std::ifstream in(path);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return all.size() > 3000 ? all.substr(all.size() - 3000) : all;
}

// A free TCP port on 127.0.0.1 (bound and released: the tool that gets it
// binds it again at once).
int free_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

// One `asteroid serve` process on a state folder.
class Daemon {
 public:
  // On running nodes (a cluster file), or with `where` = {"--env", PRESET}.
  Daemon(const std::string& state_dir, const std::string& cluster_file)
      : Daemon(state_dir, std::vector<std::string>{"--cluster", cluster_file}) {}
  Daemon(const std::string& state_dir, const std::vector<std::string>& where) : log_(state_dir + ".log") {
    const std::string ready = state_dir + ".url";
    fs::remove(ready);
    testbed::SpawnOptions o;
    o.argv = {ASTEROID_BIN, "serve", "--state-dir", state_dir, "--listen", "127.0.0.1:0", "--ready-file", ready};
    o.argv.insert(o.argv.end(), where.begin(), where.end());
    o.output_file = log_;
    process_ = testbed::Subprocess::spawn(o);
    const bool up = eventually([&] { return fs::exists(ready) || !process_.running(); }, std::chrono::seconds(60));
    if (!up || !process_.running()) throw std::runtime_error("asteroid serve did not come up:\n" + tail_of(log_));
    std::ifstream(ready) >> url_;
  }
  const std::string& url() const { return url_; }
  testbed::Subprocess& process() { return process_; }
  std::string log() const { return tail_of(log_); }

  nlohmann::json get(const std::string& path) const {
    const auto r = http_call(url_, "GET", path);
    if (r.status != 200) throw std::runtime_error("GET " + path + ": " + std::to_string(r.status) + " " + r.body);
    return nlohmann::json::parse(r.body);
  }
  // The job's id.
  std::string submit(const nlohmann::json& spec) const {
    const auto r = http_call(url_, "POST", "/jobs", spec.dump());
    if (r.status != 201) throw std::runtime_error("POST /jobs: " + std::to_string(r.status) + " " + r.body);
    return nlohmann::json::parse(r.body).at("id").get<std::string>();
  }
  nlohmann::json job(const std::string& id) const { return get("/jobs/" + id); }
  // Waits for the job to reach a final state; returns its status.
  nlohmann::json wait_final(const std::string& id, std::chrono::seconds timeout) const {
    nlohmann::json j;
    eventually(
        [&] {
          j = job(id);
          const std::string s = j.value("state", "");
          return s == "finished" || s == "failed" || s == "cancelled";
        },
        timeout);
    return j;
  }
  // Waits until the job has committed `round` (returns the round it shows).
  int64_t wait_round(const std::string& id, int64_t round, std::chrono::seconds timeout) const {
    int64_t shown = -1;
    eventually(
        [&] {
          const auto j = job(id);
          if (j.contains("round") && j["round"].is_number()) shown = j["round"].get<int64_t>();
          const std::string state = j.value("state", "");
          return shown >= round || (state != "running" && state != "queued");
        },
        timeout);
    return shown;
  }

 private:
  std::string log_, url_;
  testbed::Subprocess process_;
};

// A small job that starts quickly: fmnist-cnn, short profile, no probe. A
// heartbeat deadline of 2 s: several coordinators and nodes share the
// machine's two cores with other tests, and a job whose plan is one device
// cannot survive a false verdict on it.
nlohmann::json small_job(int64_t rounds) {
  return {{"model", "fmnist-cnn"},      {"rounds", rounds},        {"probe_rounds", 0},
          {"profile_batches", "8,32"},  {"profile_repeats", 1},    {"adapt", "off"},
          {"no_plots", true},           {"checkpoint_every", 50}, {"test_samples", 500},
          {"heartbeat_deadline", 2000}};
}

std::string cluster_file(const TempDir& dir, const LocalNodes& nodes) {
  const std::string path = dir.file("cluster.json");
  planner::save_cluster(nodes.cluster(), path);
  return path;
}

// The rounds of a run folder's metrics, in file order.
std::vector<int64_t> logged_rounds(const std::string& run_dir) {
  std::vector<int64_t> rounds;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("round") && j.contains("loss")) rounds.push_back(j["round"].get<int64_t>());
  }
  return rounds;
}

std::vector<int64_t> first_rounds(int64_t n) {
  std::vector<int64_t> r(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) r[static_cast<size_t>(i)] = i;
  return r;
}

TEST(Service, WithATokenItAnswersOnlyRequestsThatCarryIt) {
  TempDir dir("asteroid-service");
  LocalNodes nodes({"a"});
  const std::string state = dir.file("state");
  Daemon daemon(state, {"--cluster", cluster_file(dir, nodes), "--require-token"});
  const std::string token_file = state + "/api-token";
  ASSERT_TRUE(fs::exists(token_file));
  EXPECT_EQ(fs::status(token_file).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  const std::string token = apps::service::read_token_file(token_file);
  EXPECT_EQ(token.size(), 64u);

  EXPECT_EQ(http_call(daemon.url(), "GET", "/jobs").status, 401);
  EXPECT_EQ(http_call(daemon.url(), "GET", "/jobs", "", std::chrono::seconds(10), "not" + token.substr(3)).status, 401);
  EXPECT_EQ(http_call(daemon.url(), "POST", "/jobs", small_job(2).dump()).status, 401);
  EXPECT_EQ(http_call(daemon.url(), "GET", "/metrics").status, 401);
  EXPECT_EQ(http_call(daemon.url(), "GET", "/healthz").status, 200) << "health checks need no token";
  EXPECT_EQ(http_call(daemon.url(), "GET", "/").status, 200) << "the page; its requests carry #token=";
  EXPECT_EQ(http_call(daemon.url(), "GET", "/jobs", "", std::chrono::seconds(10), token).status, 200);

  const auto without = testbed::run_command({ASTEROID_BIN, "jobs", "--server", daemon.url()}, testbed::Millis(30000));
  EXPECT_NE(without.status, 0);
  EXPECT_NE(without.err.find("401"), std::string::npos) << without.err;
  const auto with = testbed::run_command({ASTEROID_BIN, "jobs", "--server", daemon.url(), "--token-file", token_file},
                                         testbed::Millis(30000));
  EXPECT_EQ(with.status, 0) << with.err;

  // The same token after a restart.
  daemon.process().stop(testbed::Millis(30000));
  Daemon again(state, {"--cluster", dir.file("cluster.json"), "--require-token"});
  EXPECT_EQ(http_call(again.url(), "GET", "/jobs", "", std::chrono::seconds(10), token).status, 200);
}

TEST(Service, SubmitWatchCancelAndResubmit) {
  LocalNodes nodes({"a", "b", "c"});
  TempDir dir("asteroid-serve");
  Daemon daemon(dir.file("state"), cluster_file(dir, nodes));

  EXPECT_NE(http_call(daemon.url(), "GET", "/").body.find("<title>Asteroid"), std::string::npos);
  EXPECT_EQ(daemon.get("/cluster")["devices"].size(), 3u);
  EXPECT_TRUE(eventually(
      [&] {
        const auto cluster = daemon.get("/cluster");
        for (const auto& d : cluster["devices"])
          if (d.value("node", "") != "up") return false;
        return true;
      },
      std::chrono::seconds(30)))
      << daemon.get("/cluster").dump();
  const auto bad = http_call(daemon.url(), "POST", "/jobs", R"({"model": "fmnist-cnn", "batch": "big"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(nlohmann::json::parse(bad.body).value("field", ""), "batch") << bad.body;
  EXPECT_EQ(http_call(daemon.url(), "GET", "/jobs/job-999999").status, 404);
  EXPECT_EQ(http_call(daemon.url(), "POST", "/jobs", "{not json").status, 400);

  const std::string long_job = daemon.submit(small_job(100000));
  const int64_t first = daemon.wait_round(long_job, 3, std::chrono::seconds(240));
  ASSERT_GE(first, 3) << daemon.log();
  const int64_t later = daemon.wait_round(long_job, first + 10, std::chrono::seconds(120));
  EXPECT_GE(later, first + 10) << "the round shown advances while the job runs";
  EXPECT_EQ(daemon.job(long_job).value("phase", ""), "training");
  EXPECT_EQ(daemon.get("/jobs")["jobs"].size(), 1u);

  const auto cancel = http_call(daemon.url(), "DELETE", "/jobs/" + long_job);
  EXPECT_EQ(cancel.status, 202) << cancel.body;
  const auto cancelled = daemon.wait_final(long_job, std::chrono::seconds(120));
  ASSERT_EQ(cancelled.value("state", ""), "cancelled") << cancelled.dump() << daemon.log();
  EXPECT_EQ(http_call(daemon.url(), "DELETE", "/jobs/" + long_job).status, 409) << "already cancelled";
  const std::string run = cancelled.value("run_dir", "");
  EXPECT_TRUE(fs::exists(run + "/checkpoint.bin")) << "a cancelled job keeps its checkpoint";
  const auto rounds = logged_rounds(run);
  EXPECT_EQ(rounds, first_rounds(static_cast<int64_t>(rounds.size())));
  EXPECT_LT(rounds.size(), 937u) << "it stopped before its epoch ended";

  const std::string short_job = daemon.submit(small_job(40));
  const auto done = daemon.wait_final(short_job, std::chrono::seconds(240));
  ASSERT_EQ(done.value("state", ""), "finished") << done.dump() << daemon.log();
  EXPECT_EQ(done.value("rounds", 0), 40);
  EXPECT_EQ(done.value("round", 0), 39);
  EXPECT_GT(done["summary"].value("test_accuracy", 0.0), 0.3);
  EXPECT_EQ(logged_rounds(done.value("run_dir", "")), first_rounds(40));
}

TEST(Service, JobsOnDisjointDevicesRunSideBySideAndOneOnAllWaits) {
  LocalNodes nodes({"a", "b", "c"});
  TempDir dir("asteroid-serve");
  Daemon daemon(dir.file("state"), cluster_file(dir, nodes));
  auto on = [](std::vector<std::string> devices, int64_t rounds) {
    auto spec = small_job(rounds);
    spec["devices"] = devices;
    return spec;
  };
  const std::string alone = daemon.submit(on({"a"}, 150));
  const std::string pair = daemon.submit(on({"b", "c"}, 150));
  const std::string all = daemon.submit(small_job(30));
  EXPECT_EQ(http_call(daemon.url(), "POST", "/jobs", on({"z"}, 10).dump()).status, 400) << "not a device of the cluster";
  bool side_by_side = false, all_waited = true;
  const bool ended = eventually(
      [&] {
        const auto a = daemon.job(alone).value("state", ""), p = daemon.job(pair).value("state", "");
        const auto w = daemon.job(all).value("state", "");
        side_by_side |= a == "running" && p == "running";
        all_waited &= w == "queued" || (a != "running" && p != "running");
        return w == "finished" || w == "failed";
      },
      std::chrono::seconds(400));
  ASSERT_TRUE(ended) << daemon.log();
  EXPECT_TRUE(side_by_side) << "the jobs on a and on b+c ran at the same time";
  EXPECT_TRUE(all_waited) << "the job on every device started after both";
  for (const auto& id : {alone, pair, all}) {
    const auto job = daemon.job(id);
    EXPECT_EQ(job.value("state", ""), "finished") << job.dump() << "\n" << tail_of(job.value("run_dir", "") + "/../output.log");
  }
  const auto plan = daemon.job(alone)["plan"].dump();
  EXPECT_EQ(plan.find("\"b\""), std::string::npos) << plan;
  EXPECT_EQ(daemon.job(pair)["plan"].dump().find("\"a\""), std::string::npos);
}

TEST(Service, KilledOutrightItResumesItsJobWithContiguousRounds) {
  LocalNodes nodes({"a", "b", "c"});
  TempDir dir("asteroid-serve");
  const std::string cluster = cluster_file(dir, nodes);
  std::string id;
  pid_t job_pid = 0;
  {
    Daemon daemon(dir.file("state"), cluster);
    auto spec = small_job(500);
    spec["replicate_every"] = 1;
    id = daemon.submit(spec);
    ASSERT_GE(daemon.wait_round(id, 120, std::chrono::seconds(240)), 120) << daemon.log();
    std::ifstream record(dir.file("state/jobs/" + id + "/job.json"));
    job_pid = nlohmann::json::parse(record).value("pid", 0);
    ASSERT_GT(job_pid, 0);
    daemon.process().signal(SIGKILL);
    ASSERT_TRUE(daemon.process().wait_for(std::chrono::seconds(10)).has_value());
  }
  const testbed::ProcessRef job_process = testbed::process_ref(job_pid);
  EXPECT_TRUE(eventually([&] { return job_process.pid == 0 || !job_process.alive(); }, std::chrono::seconds(10)))
      << "the job's process dies with its service";

  Daemon again(dir.file("state"), cluster);
  const auto done = again.wait_final(id, std::chrono::seconds(300));
  ASSERT_EQ(done.value("state", ""), "finished") << done.dump() << again.log();
  EXPECT_EQ(done.value("starts", 0), 2);
  EXPECT_EQ(logged_rounds(done.value("run_dir", "")), first_rounds(500)) << "every round once, in order";
}

TEST(Service, StoppedBySigtermItCheckpointsItsJobWhichResumesAtTheNextStart) {
  LocalNodes nodes({"a", "b"});
  TempDir dir("asteroid-serve");
  const std::string cluster = cluster_file(dir, nodes);
  std::string id;
  int64_t shown = 0;
  {
    Daemon daemon(dir.file("state"), cluster);
    auto spec = small_job(400);
    spec["checkpoint_every"] = 1000;  // only the stop writes one
    id = daemon.submit(spec);
    shown = daemon.wait_round(id, 60, std::chrono::seconds(240));
    ASSERT_GE(shown, 60) << daemon.log();
    daemon.process().signal(SIGTERM);
    const auto status = daemon.process().wait_for(std::chrono::seconds(150));
    ASSERT_TRUE(status.has_value()) << daemon.log();
    EXPECT_EQ(*status, 0) << daemon.log();
  }
  std::ifstream record(dir.file("state/jobs/" + id + "/job.json"));
  EXPECT_EQ(nlohmann::json::parse(record).value("state", ""), "queued") << "it resumes at the next start";
  const std::string run = dir.file("state/jobs/" + id + "/run");
  ASSERT_TRUE(fs::exists(run + "/checkpoint.bin")) << "the stop wrote a checkpoint";
  const auto before = logged_rounds(run);
  ASSERT_GE(static_cast<int64_t>(before.size()), shown + 1);

  Daemon again(dir.file("state"), cluster);
  const auto done = again.wait_final(id, std::chrono::seconds(300));
  ASSERT_EQ(done.value("state", ""), "finished") << done.dump() << again.log();
  EXPECT_EQ(done.value("starts", 0), 2);
  EXPECT_EQ(logged_rounds(run), first_rounds(400));
}

// --env: the service brings the preset up in its state folder, keeps it
// when it is killed and started again, and brings it down on SIGTERM.
TEST(Service, OnAnEmulatedPresetItKeepsTheClusterUntilItStops) {
  TempDir dir("asteroid-serve");
  const std::string state = dir.file("state");
  auto node_pids = [&] {
    std::vector<int> pids;
    std::ifstream in(state + "/cluster/nodes.json");
    const auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_object() && j.contains("nodes"))
      for (const auto& n : j["nodes"]) pids.push_back(n.value("pid", 0));
    return pids;
  };
  std::vector<int> first_nodes;
  {
    Daemon daemon(state, std::vector<std::string>{"--env", "D"});
    const auto cluster = daemon.get("/cluster");
    EXPECT_TRUE(cluster.value("emulated", false));
    EXPECT_EQ(cluster["devices"].size(), 4u);
    EXPECT_TRUE(eventually([&] { return daemon.get("/cluster")["devices"][0].value("node", "") == "up"; },
                           std::chrono::seconds(30)));
    const std::string id = daemon.submit(small_job(30));
    const auto done = daemon.wait_final(id, std::chrono::seconds(300));
    ASSERT_EQ(done.value("state", ""), "finished") << done.dump() << daemon.log();
    first_nodes = node_pids();
    ASSERT_EQ(first_nodes.size(), 4u);
    daemon.process().signal(SIGKILL);
    ASSERT_TRUE(daemon.process().wait_for(std::chrono::seconds(10)).has_value());
  }
  for (int pid : first_nodes) EXPECT_TRUE(testbed::process_ref(pid).alive()) << "node " << pid << " outlives a killed service";
  Daemon again(state, std::vector<std::string>{"--env", "D"});
  EXPECT_EQ(node_pids(), first_nodes) << "the running cluster is kept, not brought up again";
  EXPECT_EQ(again.get("/jobs")["jobs"][0].value("state", ""), "finished");
  again.process().signal(SIGTERM);
  ASSERT_TRUE(again.process().wait_for(std::chrono::seconds(60)).has_value()) << again.log();
  for (int pid : first_nodes) {
    const auto ref = testbed::process_ref(pid);
    EXPECT_TRUE(ref.pid == 0 || !ref.alive()) << "node " << pid << " still runs after the service stopped";
  }
}

TEST(Service, ADeviceKilledUnderAServedJobIsRecovered) {
  LocalNodes nodes({"a", "b", "c", "d"});
  TempDir dir("asteroid-serve");
  Daemon daemon(dir.file("state"), cluster_file(dir, nodes));
  auto spec = small_job(300);
  spec["replicate_every"] = 1;
  spec["strategy"] = "pp";  // every device holds layers of its own
  const std::string id = daemon.submit(spec);
  ASSERT_GE(daemon.wait_round(id, 30, std::chrono::seconds(240)), 30) << daemon.log();
  const auto plan = daemon.job(id)["plan"];
  ASSERT_GE(plan["stages"].size(), 2u) << plan.dump();
  const std::string victim = plan["stages"][1]["devices"][0]["id"].get<std::string>();
  nodes.process(victim).signal(SIGKILL);
  const auto node_of = [&](const std::string& device) {
    const auto cluster = daemon.get("/cluster");
    for (const auto& d : cluster["devices"])
      if (d.value("id", "") == device) return d.value("node", "");
    return std::string();
  };
  EXPECT_TRUE(eventually([&] { return node_of(victim) == "down"; }, std::chrono::seconds(30)))
      << "the service sees " << victim << " down: " << daemon.get("/cluster").dump();
  const auto done = daemon.wait_final(id, std::chrono::seconds(300));
  ASSERT_EQ(done.value("state", ""), "finished") << done.dump() << daemon.log();
  EXPECT_GE(done.value("failures", 0), 1);
  EXPECT_EQ(logged_rounds(done.value("run_dir", "")), first_rounds(300));
  EXPECT_EQ(done["plan"].dump().find("\"" + victim + "\""), std::string::npos) << done["plan"].dump();
  const std::string metrics = http_call(daemon.url(), "GET", "/metrics").body;
  EXPECT_NE(metrics.find("asteroid_failures_total{job=\"" + id + "\"} "), std::string::npos);
  const std::regex sent("asteroid_device_sent_bytes_total\\{job=\"" + id + "\",device=\"[a-d]\",codec=\"(fp32|int8)\"\\} [1-9]");
  EXPECT_TRUE(std::regex_search(metrics, sent)) << "a pipeline's activations, by codec:\n" << metrics;

  // The device stays down: the next job runs on the others.
  const std::string next = daemon.submit(small_job(20));
  const auto after = daemon.wait_final(next, std::chrono::seconds(240));
  ASSERT_EQ(after.value("state", ""), "finished") << after.dump() << daemon.log();
  EXPECT_EQ(after["plan"].dump().find("\"" + victim + "\""), std::string::npos) << after["plan"].dump();
}

// A service on two nodes with a job far longer than any test (one epoch),
// which the test watches and then cancels.
struct ServedJob {
  LocalNodes nodes{{"a", "b"}};
  TempDir dir{"asteroid-serve"};
  Daemon daemon{dir.file("state"), cluster_file(dir, nodes)};
  std::string id = daemon.submit(small_job(100000));

  bool under_way() const { return daemon.wait_round(id, 3, std::chrono::seconds(240)) >= 3; }
  void cancel() const {
    EXPECT_EQ(http_call(daemon.url(), "DELETE", "/jobs/" + id).status, 202);
    EXPECT_EQ(daemon.wait_final(id, std::chrono::seconds(120)).value("state", ""), "cancelled");
  }
};

// A real Prometheus server (Debian's prometheus) scrapes the service with
// its own configuration; its query API then has a positive round counter.
TEST(Service, APrometheusServerScrapesIt) {
  const std::string prometheus = testbed::find_executable("prometheus");
  if (prometheus.empty()) GTEST_SKIP() << "prometheus not installed (apt-get install prometheus; scripts/test.sh does)";
  const ServedJob served;
  ASSERT_TRUE(served.under_way()) << served.daemon.log();
  const Daemon& daemon = served.daemon;
  const TempDir& dir = served.dir;

  const std::string target = daemon.url().substr(std::string("http://").size());
  std::ofstream(dir.file("prometheus.yml")) << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                                            << "scrape_configs:\n  - job_name: asteroid\n    static_configs:\n"
                                            << "      - targets: ['" << target << "']\n";
  const int port = free_port();
  testbed::SpawnOptions o;
  o.argv = {prometheus, "--config.file=" + dir.file("prometheus.yml"), "--storage.tsdb.path=" + dir.file("tsdb"),
            "--web.listen-address=127.0.0.1:" + std::to_string(port)};
  o.output_file = dir.file("prometheus.log");
  testbed::Subprocess server = testbed::Subprocess::spawn(o);
  const std::string api = "http://127.0.0.1:" + std::to_string(port);
  double rounds = 0;
  const bool scraped = eventually(
      [&] {
        try {
          const auto r = http_call(api, "GET", "/api/v1/query?query=asteroid_rounds_committed_total");
          const auto j = nlohmann::json::parse(r.body, nullptr, false);
          if (!j.is_object() || j["data"]["result"].empty()) return false;
          rounds = std::stod(j["data"]["result"][0]["value"][1].get<std::string>());
          return rounds > 0;
        } catch (const std::exception&) {
          return false;  // not listening yet
        }
      },
      std::chrono::seconds(60));
  EXPECT_TRUE(scraped) << tail_of(dir.file("prometheus.log"));
  EXPECT_GT(rounds, 0);
  server.stop();
  served.cancel();
}

// The dashboard in headless Chromium (Debian's chromium): the round it
// shows advances between two loads, and a screenshot is left in the
// build's test-output folder.
TEST(Service, TheDashboardShowsTheRoundAdvancing) {
  const std::string chromium = testbed::find_executable("chromium");
  if (chromium.empty()) GTEST_SKIP() << "chromium not installed (apt-get install chromium; scripts/test.sh does)";
  const ServedJob served;
  ASSERT_TRUE(served.under_way()) << served.daemon.log();
  const Daemon& daemon = served.daemon;
  const TempDir& dir = served.dir;
  const std::string& id = served.id;

  auto browse = [&](const std::vector<std::string>& what) {
    std::vector<std::string> argv = {chromium,         "--headless",        "--no-sandbox",
                                     "--disable-gpu",  "--disable-quic",    "--no-first-run",
                                     "--disable-background-networking", "--disable-component-update",
                                     "--disable-sync", "--user-data-dir=" + dir.file("chromium"),
                                     "--window-size=1400,1200", "--virtual-time-budget=5000"};
    argv.insert(argv.end(), what.begin(), what.end());
    argv.push_back(daemon.url() + "/");
    return testbed::run_command(argv, std::chrono::seconds(90));
  };
  const std::regex shown("id=\"round\">([0-9]+)<");
  auto round_shown = [&]() -> int64_t {
    const auto page = browse({"--dump-dom"});
    std::smatch m;
    if (page.status != 0 || !std::regex_search(page.out, m, shown)) {
      ADD_FAILURE() << "no round on the page (exit " << page.status << "):\n" << page.out.substr(0, 2000) << page.err;
      return -1;
    }
    return std::stoll(m[1]);
  };
  const int64_t first = round_shown();
  ASSERT_GE(first, 0);
  ASSERT_GE(daemon.wait_round(id, first + 5, std::chrono::seconds(120)), first + 5);
  const int64_t second = round_shown();
  EXPECT_GT(second, first) << "the dashboard follows the job";

  const fs::path out = fs::path(ASTEROID_TEST_OUTPUT_DIR) / "dashboard.png";
  fs::create_directories(out.parent_path());
  fs::remove(out);
  const auto shot = browse({"--screenshot=" + out.string()});
  EXPECT_TRUE(fs::exists(out) && fs::file_size(out) > 10000) << shot.out << shot.err;
  std::printf("dashboard screenshot: %s\n", out.c_str());
  served.cancel();
}

}  // namespace
}  // namespace asteroid::apps::service
