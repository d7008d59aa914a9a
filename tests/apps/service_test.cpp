// The training service's pure parts (apps/service/): job specs, the job
// queue's start rule and records, the run-folder watch, the Prometheus
// exposition, and the HTTP server's bounds. No node, no training.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "apps/service/http.h"
#include "apps/service/job_queue.h"
#include "apps/service/job_spec.h"
#include "apps/service/job_watch.h"
#include "apps/service/prometheus.h"
#include "apps/testbed/process.h"
#include "tests/support/temp_dir.h"

namespace asteroid::apps::service {
namespace {

using test_support::TempDir;

std::string refused_field(const nlohmann::json& spec) {
  try {
    parse_job_spec(spec);
  } catch (const JobSpecError& e) {
    return e.field.empty() ? "<spec>" : e.field;
  }
  return "";
}

TEST(JobSpec, FieldsBecomeTrainFlags) {
  const auto r = parse_job_spec({{"model", "fmnist-cnn"},
                                 {"rounds", 40},
                                 {"lr", 0.01},
                                 {"replicate_every", 2},
                                 {"no_plots", true},
                                 {"devices", {"a", "b"}},
                                 {"faults", {{"faults", nlohmann::json::array()}}}});
  const std::vector<std::string> expected = {"--lr",       "0.01", "--model", "fmnist-cnn", "--no-plots",
                                             "--replicate-every", "2",  "--rounds", "40"};
  EXPECT_EQ(r.train_args, expected);
  EXPECT_EQ(r.devices, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(r.files.count("--faults"), 1u);
  EXPECT_EQ(r.name, "fmnist-cnn") << "no name: the model's";
}

TEST(JobSpec, ARefusedSpecNamesTheField) {
  EXPECT_EQ(refused_field({{"modle", "fmnist-cnn"}}), "modle") << "unknown";
  EXPECT_EQ(refused_field({{"rounds", "many"}}), "rounds") << "wrong type";
  EXPECT_EQ(refused_field({{"rounds", 2.5}}), "rounds") << "not whole";
  EXPECT_EQ(refused_field({{"batch", 0}}), "batch") << "out of range";
  EXPECT_EQ(refused_field({{"strategy", "fastest"}}), "strategy") << "not a choice";
  EXPECT_EQ(refused_field({{"model", "no-such-model"}}), "model");
  EXPECT_EQ(refused_field({{"model", "/nowhere/model.pt"}}), "model");
  EXPECT_EQ(refused_field({{"out", "/tmp/x"}}), "out") << "the service decides";
  EXPECT_EQ(refused_field({{"devices", {"a", "a"}}}), "devices");
  EXPECT_EQ(refused_field({{"faults", 3}}), "faults");
  EXPECT_EQ(refused_field(nlohmann::json::array()), "<spec>");
  EXPECT_EQ(refused_field({{"model", "fmnist-cnn"}, {"rounds", 10}}), "") << "a good spec";
}

Job queued_job(JobQueue& q, const std::vector<std::string>& devices) {
  nlohmann::json spec = {{"model", "fmnist-cnn"}};
  if (!devices.empty()) spec["devices"] = devices;
  return q.submit(spec, parse_job_spec(spec), 1.0);
}

TEST(JobQueue, StartsInOrderAndSideBySideOnlyOnFreeDevices) {
  TempDir dir("asteroid-queue");
  JobQueue q(dir.path());
  const std::vector<std::string> cluster = {"a", "b", "c", "d"};
  const auto j1 = queued_job(q, {"a", "b"});
  const auto j2 = queued_job(q, {"c"});
  const auto j3 = queued_job(q, {});  // the whole cluster
  const auto j4 = queued_job(q, {"d"});
  EXPECT_EQ(q.startable(cluster), (std::vector<std::string>{j1.id, j2.id}))
      << "j3 waits for everything: j4 may not take d ahead of it";
  q.find(j1.id)->state = JobState::running;
  q.find(j2.id)->state = JobState::running;
  EXPECT_TRUE(q.startable(cluster).empty());
  q.find(j1.id)->state = JobState::finished;
  q.find(j2.id)->state = JobState::failed;
  EXPECT_EQ(q.startable(cluster), (std::vector<std::string>{j3.id}));
  q.find(j3.id)->state = JobState::running;
  EXPECT_TRUE(q.startable(cluster).empty());
  q.find(j3.id)->state = JobState::cancelled;
  EXPECT_EQ(q.startable(cluster), (std::vector<std::string>{j4.id}));
}

TEST(JobQueue, RecordsSurviveAReloadAndABrokenOneIsNamed) {
  TempDir dir("asteroid-queue");
  std::string id;
  {
    JobQueue q(dir.path());
    Job job = queued_job(q, {"a"});
    id = job.id;
    Job& stored = *q.find(id);
    stored.state = JobState::running;
    stored.starts = 2;
    stored.pid = 4242;
    stored.result = {{"round", 17}};
    q.save(stored);
    queued_job(q, {});
  }
  std::filesystem::create_directories(dir.file("jobs/job-000009"));
  std::ofstream(dir.file("jobs/job-000009/job.json")) << "{not json";
  JobQueue again(dir.path());
  ASSERT_EQ(again.jobs().size(), 2u);
  const Job* job = again.find(id);
  ASSERT_NE(job, nullptr);
  EXPECT_EQ(job->state, JobState::running);
  EXPECT_EQ(job->starts, 2);
  EXPECT_EQ(job->pid, 4242);
  EXPECT_EQ(job->result.value("round", 0), 17);
  EXPECT_EQ(job->request.devices, std::vector<std::string>{"a"});
  ASSERT_EQ(again.skipped.size(), 1u);
  EXPECT_NE(again.skipped[0].find("job-000009"), std::string::npos) << again.skipped[0];
  EXPECT_EQ(queued_job(again, {}).id, "job-000010") << "ids never repeat, also past a broken record";
}

void append(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::app) << text; }

std::string round_line(int round, double loss, double unix_s) {
  return nlohmann::json{{"round", round}, {"loss", loss}, {"samples", 64}, {"ms", 10.0}, {"unix_s", unix_s}}.dump() +
         "\n";
}

TEST(JobWatch, ReadsWhatWasAppendedAndStartsOverWhenTheFileIsReplaced) {
  TempDir dir("asteroid-watch");
  const std::string metrics = dir.file("metrics.jsonl");
  JobWatch w(dir.path());
  w.refresh();
  EXPECT_EQ(w.rounds(), 0u);
  append(metrics, round_line(0, 2.0, 100) + round_line(1, 1.9, 101));
  append(metrics, nlohmann::json{{"event", "failure"}, {"text", "d lost"}, {"unix_s", 101.5}}.dump() + "\n");
  append(metrics, round_line(2, 1.8, 104) + "{\"round\": 3, \"lo");  // a line being written
  w.refresh();
  EXPECT_EQ(w.rounds(), 3u);
  EXPECT_EQ(w.count("failure"), 1u);
  ASSERT_EQ(w.recovery_seconds().size(), 1u);
  EXPECT_DOUBLE_EQ(w.recovery_seconds()[0], 2.5) << "from the failure to the next commit";
  append(metrics, "ss\": 1.7, \"samples\": 64, \"unix_s\": 110}\n");
  w.refresh();
  EXPECT_EQ(w.rounds(), 4u) << "the torn line, once whole";
  EXPECT_DOUBLE_EQ(w.last()->loss, 1.7);
  // 5 s window: the rounds after the one committed at 104 (at 110: 64 samples in 6 s).
  EXPECT_NEAR(w.samples_per_s(), 64.0 / 6.0, 1e-9);
  // A resumed job trims the file (a new file by rename): the watch starts over.
  const std::string tmp = dir.file("metrics.tmp");
  std::ofstream(tmp) << round_line(0, 2.0, 100) << round_line(1, 1.9, 101);
  std::filesystem::rename(tmp, metrics);
  w.refresh();
  EXPECT_EQ(w.rounds(), 2u);
  EXPECT_EQ(w.count("failure"), 0u);
  std::ofstream(dir.file("status.json")) << R"({"phase": "training", "plan": {"stages": []}})";
  w.refresh();
  EXPECT_EQ(w.status().value("phase", ""), "training");
}

// Every line of the exposition is a comment or `name{labels} value`, and
// promtool (Debian's prometheus package; scripts/test.sh installs it)
// accepts the whole page.
TEST(Prometheus, TheExpositionIsValidTextFormat) {
  TempDir dir("asteroid-prom");
  JobQueue q(dir.path());
  const Job job = queued_job(q, {});
  q.find(job.id)->state = JobState::running;
  JobWatch w(dir.path());
  std::ofstream(dir.file("metrics.jsonl")) << round_line(0, 2.0, 100) << round_line(1, 1.5, 101)
                                           << nlohmann::json{{"event", "failure"}, {"unix_s", 101.2}}.dump() << "\n"
                                           << nlohmann::json{{"event", "replan"}, {"unix_s", 101.4}}.dump() << "\n"
                                           << round_line(2, 1.4, 103);
  std::ofstream(dir.file("status.json")) << nlohmann::json{
      {"phase", "training"},
      {"devices", {{"a", "in use"}, {"b \"quoted\"", "lost"}}},
      {"device_times", {{"a", {{"compute_s", 1.5}, {"send_s", 0.5}, {"all_reduce_s", 0.0}, {"in_rounds_s", 3.0}, {"sent_bytes", {{"int8", 1000}, {"fp32", 24}}}}}}},
      {"heartbeat_round_trips", {{"a", {{"sum_ms", 12.0}, {"count", 4}, {"last_ms", 3.0}}}}},
      {"device_scale", {{"a", 1.25}}},
      {"plan", {{"stages", {{{"layers", {0, 2}}, {"to_next_codec", "int8"}}, {{"layers", {2, 6}}}}}}},
      {"dropped_messages", 3}};
  w.refresh();
  const std::string text = prometheus_text(q.jobs(), {{q.find(job.id), &w}});
  const std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? [-+0-9.eE]+(Inf)?$)");
  std::istringstream lines(text);
  std::string line;
  int samples = 0;
  while (std::getline(lines, line)) {
    if (line.rfind("# ", 0) == 0) continue;
    EXPECT_TRUE(std::regex_match(line, sample)) << line;
    ++samples;
  }
  EXPECT_GT(samples, 20);
  EXPECT_NE(text.find("asteroid_rounds_committed_total{job=\"" + job.id + "\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("asteroid_device_wait_seconds_total{job=\"" + job.id + "\",device=\"a\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("asteroid_device_up{job=\"" + job.id + "\",device=\"b \\\"quoted\\\"\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("asteroid_device_sent_bytes_total{job=\"" + job.id + "\",device=\"a\",codec=\"int8\"} 1000\n"),
            std::string::npos);
  EXPECT_NE(text.find("asteroid_recovery_seconds_bucket{job=\"" + job.id + "\",le=\"2\"} 1\n"), std::string::npos)
      << "1.8 s from the failure to round 2";
  EXPECT_NE(text.find("asteroid_recovery_seconds_bucket{job=\"" + job.id + "\",le=\"1\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("asteroid_stage_link_codec_info{job=\"" + job.id + "\",stage=\"0\",codec=\"int8\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("asteroid_jobs{state=\"running\"} 1\n"), std::string::npos);

  if (testbed::find_executable("promtool").empty()) GTEST_SKIP() << "promtool not installed (apt-get install prometheus)";
  std::ofstream(dir.file("metrics.txt")) << text;
  const auto check = testbed::run_command({"sh", "-c", "promtool check metrics < " + dir.file("metrics.txt")});
  EXPECT_EQ(check.status, 0) << check.out << check.err;
}

// A raw exchange with the server: what a hostile or broken client sends.
std::string raw_exchange(uint16_t port, const std::string& bytes) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket s(io);
  s.connect({boost::asio::ip::make_address("127.0.0.1"), port});
  boost::asio::write(s, boost::asio::buffer(bytes));
  std::string answer;
  boost::system::error_code ec;
  char buf[4096];
  for (;;) {
    const size_t n = s.read_some(boost::asio::buffer(buf), ec);
    if (ec) break;
    answer.append(buf, n);
  }
  return answer;
}

TEST(HttpServer, BoundsWhatAClientCanSendAndAnswersJson) {
  boost::asio::io_context io;
  HttpServer::Limits limits;
  limits.max_body = 1000;
  limits.max_connections = 2;
  limits.idle_timeout = std::chrono::seconds(5);
  HttpServer server(io, "127.0.0.1", 0,
                    [](const HttpRequest& r) {
                      if (r.target == "/throw") throw std::runtime_error("handler failed");
                      return HttpResponse{200, "application/json", nlohmann::json{{"method", r.method}, {"body", r.body}}.dump()};
                    },
                    limits);
  std::thread loop([&] { io.run(); });
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port());

  const auto ok = http_call(url, "POST", "/x", "{\"a\":1}");
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(nlohmann::json::parse(ok.body).value("body", ""), "{\"a\":1}");

  const auto big = http_call(url, "POST", "/x", std::string(1001, 'x'));
  EXPECT_EQ(big.status, 413);
  EXPECT_NE(nlohmann::json::parse(big.body).value("error", "").find("1000 bytes"), std::string::npos);

  const auto failed = http_call(url, "GET", "/throw");
  EXPECT_EQ(failed.status, 500);
  EXPECT_EQ(nlohmann::json::parse(failed.body).value("error", ""), "handler failed");

  const std::string garbage = raw_exchange(server.port(), "\x16\x03\x01 not http at all\r\n\r\n");
  EXPECT_NE(garbage.find("400"), std::string::npos) << garbage;

  // Two idle connections fill the limit: a third is refused, the server lives.
  boost::asio::io_context client;
  boost::asio::ip::tcp::socket c1(client), c2(client);
  c1.connect({boost::asio::ip::make_address("127.0.0.1"), server.port()});
  c2.connect({boost::asio::ip::make_address("127.0.0.1"), server.port()});
  const std::string third = raw_exchange(server.port(), "GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(third.find("503"), std::string::npos) << third;
  c1.close();
  c2.close();
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {  // the server notices the closed connections
    served = http_call(url, "GET", "/x").status == 200;
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(served);

  EXPECT_THROW(http_call("http://127.0.0.1:1", "GET", "/"), std::runtime_error);
  io.stop();
  loop.join();
}

}  // namespace
}  // namespace asteroid::apps::service
