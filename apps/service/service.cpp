#include "apps/service/service.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <cstdio>

#include "actors/transport.h"
#include "apps/service/api_token.h"
#include "apps/service/dashboard.h"
#include "apps/service/http.h"
#include "apps/service/job_queue.h"
#include "apps/service/job_watch.h"
#include "apps/service/prometheus.h"
#include "apps/testbed/emulated_cluster.h"
#include "apps/testbed/presets.h"
#include "apps/testbed/process.h"
#include "compute/durable_file.h"
#include "planner/json_io.h"

namespace asteroid::apps::service {
namespace fs = std::filesystem;
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kTick = std::chrono::milliseconds(250);
constexpr auto kNodeCheckEvery = std::chrono::seconds(5);

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

nlohmann::json null_or(double v) { return v > 0 ? nlohmann::json(v) : nlohmann::json(nullptr); }

// The last line of a job's output that says what went wrong.
std::string last_error_line(const fs::path& log) {
  std::ifstream in(log, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const auto size = static_cast<long long>(in.tellg());
  in.seekg(std::max(0LL, size - 65536));
  std::string tail((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string error, last, line;
  std::istringstream lines(tail);
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    last = line;
    if (line.find("error:") != std::string::npos) error = line;
  }
  return error.empty() ? last : error;
}

struct Running {
  testbed::Subprocess process;
  JobWatch watch;
  std::optional<Clock::time_point> stop_sent;  // SIGTERM sent (cancel, service stop)
};

class Service {
 public:
  explicit Service(const ServiceOptions& o) : o_(o), queue_(o.state_dir), signals_(io_, SIGINT, SIGTERM), tick_(io_) {
    for (const auto& s : queue_.skipped) spdlog::warn("serve: skipped a job record that does not load: {}", s);
    // The address first: nothing is brought up for a service that may not listen.
    const auto colon = o.listen.rfind(':');
    if (colon == std::string::npos) throw std::invalid_argument("--listen must be HOST:PORT, got '" + o.listen + "'");
    const std::string host = o.listen.substr(0, colon);
    if (!actors::is_loopback(host) && o.insecure) {
      actors::check_plain_listening("the service's API", host, true);  // warns
    } else if (!actors::is_loopback(host) || o.require_token) {
      token_ = api_token(o.state_dir);
      spdlog::info("serve: the API on {} takes requests with the bearer token in {} only (plain HTTP: "
                   "docs/security.md)",
                   host, (fs::path(o.state_dir) / kTokenFile).string());
    }
    const int port = std::stoi(o.listen.substr(colon + 1));
    if (port < 0 || port > 65535) throw std::invalid_argument("--listen port out of range: " + o.listen);
    program_ = o.program.empty() ? fs::read_symlink("/proc/self/exe").string() : o.program;
    prepare_cluster();
    requeue_interrupted();
    HttpServer::Limits limits;
    limits.max_body = o.max_body;
    limits.max_connections = o.max_connections;
    server_.emplace(io_, host, static_cast<uint16_t>(port),
                    [this](const HttpRequest& r) { return handle(r); }, limits);
    url_ = "http://" + host + ":" + std::to_string(server_->port());
  }

  int run() {
    spdlog::info("serve: listening on {} (state {}, cluster {}, {} job(s) known)", url_, o_.state_dir, cluster_file_,
                 queue_.jobs().size());
    std::printf("asteroid serve: %s\n", url_.c_str());
    std::fflush(stdout);
    if (!o_.ready_file.empty()) compute::write_file_atomically(o_.ready_file, url_ + "\n", "ready file");
    signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
      if (!ec) begin_stop(sig);
    });
    tick();
    io_.run();
    return 0;
  }

 private:
  // ------------------------------------------------------------ cluster

  void prepare_cluster() {
    if (o_.env.empty() == o_.cluster_file.empty())
      throw std::invalid_argument("serve: give exactly one of --cluster FILE (running nodes) or --env A|B|C|D");
    if (!o_.cluster_file.empty()) {
      cluster_file_ = fs::absolute(o_.cluster_file).string();
    } else {
      const fs::path dir = fs::absolute(fs::path(o_.state_dir) / "cluster");
      cluster_file_ = (dir / "cluster.json").string();
      bool up = false;
      if (fs::exists(dir / "nodes.json")) {
        try {
          const auto status = testbed::EmulatedCluster::attach(dir.string()).status();
          up = !status.nodes.empty() && std::all_of(status.nodes.begin(), status.nodes.end(),
                                                    [](const testbed::NodeStatus& n) { return n.state == "running"; });
          if (!up) testbed::EmulatedCluster::attach(dir.string()).down();
        } catch (const std::exception& e) {
          spdlog::warn("serve: the emulated cluster in {} is not usable ({}); bringing it up again", dir.string(),
                       e.what());
        }
      }
      if (up) {
        spdlog::info("serve: the emulated cluster in {} is up: keeping it", dir.string());
      } else {
        spdlog::info("serve: bringing up emulated env {} in {}", o_.env, dir.string());
        testbed::LaunchOptions launch;
        launch.dir = dir.string();
        launch.cpu = testbed::parse_cpu_mode(o_.cpu_mode);
        launch.net = testbed::parse_net_mode(o_.net_mode);
        launch.die_with_parent = false;  // kept across the service's restarts
        launch.log = [](const std::string& m) { spdlog::info("{}", m); };
        auto cluster = testbed::EmulatedCluster::up(
            testbed::preset_spec(o_.env, o_.bandwidth_mbps > 0 ? o_.bandwidth_mbps : 1000, o_.cpu_budget), launch);
        cluster.detach();
      }
      emulated_dir_ = dir.string();
    }
    cluster_ = planner::load_cluster(cluster_file_);
    for (const auto& d : cluster_.devices) device_ids_.push_back(d.id);
  }

  // The cluster file a job runs on: the service's, or the part of it the
  // job's "devices" name (beside it: an emulated cluster's jobs find its
  // nodes.json there).
  std::string cluster_file_for(const Job& job) {
    if (job.request.devices.empty()) return cluster_file_;
    planner::Cluster part;
    part.default_bandwidth_mbps = cluster_.default_bandwidth_mbps;
    part.tls_dir = cluster_.tls_dir;  // absolute (load_cluster)
    part.tls_allow = cluster_.tls_allow;
    const std::set<std::string> wanted(job.request.devices.begin(), job.request.devices.end());
    for (const auto& d : cluster_.devices)
      if (wanted.count(d.id)) part.devices.push_back(d);
    for (const auto& l : cluster_.links)
      if (wanted.count(l.a) && wanted.count(l.b)) part.links.push_back(l);
    const fs::path beside = fs::path(cluster_file_).parent_path();
    const fs::path dir = fs::exists(beside / "nodes.json") ? beside : fs::path(queue_.job_dir(job.id));
    const std::string path = (dir / (job.id + ".cluster.json")).string();
    planner::save_cluster(part, path);
    return path;
  }

  // ------------------------------------------------------------ jobs

  // Jobs the last service left running go back to the queue; a process of
  // theirs still alive (same pid and start time) is stopped first.
  void requeue_interrupted() {
    for (const auto& [id, j] : queue_.jobs()) {
      if (j.state != JobState::running) continue;
      Job& job = *queue_.find(id);
      if (job.pid > 0) {
        const testbed::ProcessRef ref{job.pid, job.pid_start};
        if (ref.alive()) {
          spdlog::warn("serve: {}'s process {} outlived the last service: stopping it", id, job.pid);
          testbed::stop_processes({ref}, std::chrono::seconds(60));
        }
      }
      job.pid = 0;
      job.pid_start = 0;
      job.state = job.cancel_requested ? JobState::cancelled : JobState::queued;
      if (job.cancel_requested) job.ended_s = unix_now();
      queue_.save(job);
      spdlog::info("serve: {} was running when the last service ended: {}", id,
                   job.cancel_requested ? "cancelled" : "it resumes");
    }
  }

  void start(Job& job) {
    const fs::path dir = queue_.job_dir(job.id);
    const fs::path run = dir / "run";
    fs::create_directories(run);
    std::vector<std::string> argv = {program_, "train", "--cluster", cluster_file_for(job), "--out", run.string(),
                                     "--job-id", job.id, "--progress", "plain", "--skip-unreachable"};
    const auto has = [&](const std::string& flag) {
      return std::find(job.request.train_args.begin(), job.request.train_args.end(), flag) !=
             job.request.train_args.end();
    };
    // A served job measures no baseline unless asked, and checkpoints
    // often enough that a restart loses little even without the nodes.
    if (!has("--baseline-rounds")) argv.insert(argv.end(), {"--baseline-rounds", "0"});
    if (!has("--checkpoint-every")) argv.insert(argv.end(), {"--checkpoint-every", "50"});
    if (!o_.tls_dir.empty()) argv.insert(argv.end(), {"--tls-dir", o_.tls_dir});
    argv.insert(argv.end(), job.request.train_args.begin(), job.request.train_args.end());
    const bool resume = fs::exists(run / "checkpoint.bin") || fs::exists(run / "checkpoint.bin.prev");
    for (const auto& [flag, document] : job.request.files) {
      if (resume && flag == "--plan") continue;  // the checkpoint has the plan
      const std::string name = flag.substr(2) + ".json";
      compute::write_file_atomically((dir / name).string(), document.dump(2) + "\n", name);
      argv.insert(argv.end(), {flag, (dir / name).string()});
    }
    if (resume) argv.insert(argv.end(), {"--resume", run.string()});
    testbed::SpawnOptions spawn;
    spawn.argv = argv;
    spawn.output_file = (dir / "output.log").string();
    spawn.new_session = true;      // a terminal's Ctrl-C reaches the service, which stops its jobs
    spawn.die_with_parent = true;  // a service killed outright takes its jobs along (they resume)
    Running r{testbed::Subprocess::spawn(spawn), JobWatch(run.string()), std::nullopt};
    job.state = JobState::running;
    job.pid = r.process.pid();
    job.pid_start = r.process.ref().start_time;
    job.starts += 1;
    if (job.started_s == 0) job.started_s = unix_now();
    queue_.save(job);
    spdlog::info("serve: {} started ({}{}): {}", job.id, resume ? "resumed, " : "", job.request.name,
                 testbed::join_command(argv));
    finished_.erase(std::remove_if(finished_.begin(), finished_.end(),
                                   [&](const auto& f) { return f.first == job.id; }),
                    finished_.end());
    running_.emplace(job.id, std::move(r));
  }

  void tick() {
    if (Clock::now() - nodes_checked_ >= kNodeCheckEvery) check_nodes();
    for (auto it = running_.begin(); it != running_.end();) {
      Running& r = it->second;
      r.watch.refresh();
      if (r.process.running()) {
        if (r.stop_sent && Clock::now() - *r.stop_sent > o_.stop_grace) r.process.signal(SIGKILL);
        ++it;
        continue;
      }
      ended(it->first, r);
      it = running_.erase(it);
    }
    if (!stopping_) {
      for (const auto& id : queue_.startable(device_ids_)) {
        try {
          start(*queue_.find(id));
        } catch (const std::exception& e) {
          Job& job = *queue_.find(id);
          job.state = JobState::failed;
          job.error = std::string("could not start: ") + e.what();
          job.ended_s = unix_now();
          queue_.save(job);
          spdlog::error("serve: {}: {}", id, job.error);
        }
      }
    } else if (running_.empty()) {
      return finish_stop();
    }
    tick_.expires_after(kTick);
    tick_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) tick();
    });
  }

  // Whether each device's node is up, whatever job uses it: an emulated
  // cluster's by its processes (their addresses are inside its own
  // namespaces), running nodes by a TCP connection within 1 s, made on the
  // io_context like everything else here (nothing waits for it).
  void check_nodes() {
    nodes_checked_ = Clock::now();
    if (!emulated_dir_.empty()) {
      try {
        for (const auto& n : testbed::EmulatedCluster::attach(emulated_dir_).status().nodes)
          node_state_[n.id] = n.state == "running" ? "up" : n.state == "frozen" ? "frozen" : "down";
      } catch (const std::exception& e) {
        spdlog::warn("serve: cannot read the emulated cluster's state: {}", e.what());
      }
      return;
    }
    for (const auto& d : cluster_.devices) {
      if (d.host.empty() || d.port <= 0) continue;
      auto socket = std::make_shared<asio::ip::tcp::socket>(io_);
      auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::seconds(1));
      boost::system::error_code ec;
      const auto address = asio::ip::make_address(d.host, ec);
      if (ec) {
        node_state_[d.id] = "down";  // a host name: not resolved here (the jobs do)
        continue;
      }
      const std::string id = d.id;
      socket->async_connect({address, static_cast<uint16_t>(d.port)},
                            [this, id, socket, timer](const boost::system::error_code& error) {
                              timer->cancel();
                              node_state_[id] = error ? "down" : "up";
                              boost::system::error_code ignored;
                              socket->close(ignored);
                            });
      timer->async_wait([socket](const boost::system::error_code& error) {
        if (!error) socket->cancel();  // no answer in time: the connect ends as down
      });
    }
  }

  void ended(const std::string& id, Running& r) {
    r.watch.refresh();
    Job& job = *queue_.find(id);
    const int status = r.process.exit_status().value_or(-1);
    job.pid = 0;
    job.pid_start = 0;
    if (stopping_ && !job.cancel_requested) {
      job.state = JobState::queued;  // resumes at the next start
      spdlog::info("serve: {} stopped for the service's stop (exit {}); it resumes at the next start", id, status);
    } else {
      job.ended_s = unix_now();
      job.state = job.cancel_requested ? JobState::cancelled : status == 0 ? JobState::finished : JobState::failed;
      if (job.state == JobState::failed) job.error = last_error_line(fs::path(queue_.job_dir(id)) / "output.log");
      spdlog::info("serve: {} {} (exit {}){}", id, to_string(job.state), status,
                   job.error.empty() ? "" : ": " + job.error);
    }
    job.result = progress_json(job, r.watch);
    queue_.save(job);
    finished_.emplace_back(id, std::move(r.watch));
    while (finished_.size() > o_.watched_finished) finished_.pop_front();
  }

  // ------------------------------------------------------------ stop

  void begin_stop(int sig) {
    spdlog::info("serve: signal {}: stopping every job at a round boundary (checkpoint first), then the service", sig);
    stopping_ = true;
    if (server_) server_->stop();
    for (auto& [id, r] : running_) {
      r.process.signal(SIGTERM);
      r.stop_sent = Clock::now();
    }
    // A second signal: the jobs are killed (they resume from their nodes' states).
    signals_.async_wait([this](const boost::system::error_code& ec, int) {
      if (ec) return;
      for (auto& [id, r] : running_) r.process.signal(SIGKILL);
    });
  }

  void finish_stop() {
    if (!emulated_dir_.empty()) {
      try {
        testbed::EmulatedCluster::attach(emulated_dir_).down();
        spdlog::info("serve: emulated cluster in {} brought down", emulated_dir_);
      } catch (const std::exception& e) {
        spdlog::error("serve: bringing the emulated cluster down: {}", e.what());
      }
    }
    signals_.cancel();
    io_.stop();
  }

  // ------------------------------------------------------------ API

  HttpResponse handle(const HttpRequest& req) {
    std::string path = req.target.substr(0, req.target.find('?'));
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    const bool get = req.method == "GET";
    if (path == "/" || path == "/index.html") {
      if (!get) return json_error(405, "use GET");
      return {200, "text/html; charset=utf-8", dashboard_html()};
    }
    if (!token_.empty() && path != "/healthz" && !bearer_matches(req.authorization, token_)) {
      return json_error(401, "this service wants \"Authorization: Bearer TOKEN\" with the token in its state "
                             "directory's " + std::string(kTokenFile) + " (asteroid submit|jobs|cancel --token-file)");
    }
    if (path == "/metrics") {
      if (!get) return json_error(405, "use GET");
      return {200, "text/plain; version=0.0.4; charset=utf-8", prometheus_text(queue_.jobs(), watched())};
    }
    if (path == "/healthz") return {200, "application/json", nlohmann::json{{"ok", true}}.dump() + "\n"};
    if (path == "/cluster") {
      if (!get) return json_error(405, "use GET");
      return ok(cluster_json());
    }
    if (path == "/jobs") {
      if (req.method == "POST") return submit(req.body);
      if (!get) return json_error(405, "use GET or POST");
      nlohmann::json list = nlohmann::json::array();
      for (const auto& [id, job] : queue_.jobs()) list.push_back(job_json(job, watch_of(id), false));
      return ok({{"jobs", list}});
    }
    if (path.rfind("/jobs/", 0) == 0) {
      std::string rest = path.substr(6);
      const bool rounds = rest.size() > 7 && rest.compare(rest.size() - 7, 7, "/rounds") == 0;
      if (rounds) rest.resize(rest.size() - 7);
      Job* job = queue_.find(rest);
      if (!job) return json_error(404, "no job '" + rest + "'");
      if (req.method == "DELETE" && !rounds) return cancel(*job);
      if (!get) return json_error(405, "use GET or DELETE");
      std::optional<JobWatch> loaded;
      const JobWatch* w = watch_of(job->id);
      if (!w) {
        loaded.emplace((fs::path(queue_.job_dir(job->id)) / "run").string());
        loaded->refresh();
        w = &*loaded;
      }
      return ok(rounds ? rounds_json(*w) : job_json(*job, w, true));
    }
    return json_error(404, "no such resource: " + path);
  }

  static HttpResponse ok(const nlohmann::json& j, int status = 200) {
    return {status, "application/json", j.dump() + "\n"};
  }

  HttpResponse submit(const std::string& body) {
    nlohmann::json spec;
    try {
      spec = nlohmann::json::parse(body);
    } catch (const nlohmann::json::exception& e) {
      return json_error(400, std::string("the body is not JSON: ") + e.what());
    }
    JobRequest request;
    try {
      request = parse_job_spec(spec);
    } catch (const JobSpecError& e) {
      return json_error(400, e.what(), e.field);
    }
    for (const auto& d : request.devices) {
      if (std::find(device_ids_.begin(), device_ids_.end(), d) == device_ids_.end())
        return json_error(400, "field 'devices': '" + d + "' is not a device of the service's cluster", "devices");
    }
    if (stopping_) return json_error(503, "the service is stopping");
    const Job& job = queue_.submit(std::move(spec), std::move(request), unix_now());
    spdlog::info("serve: {} queued ({})", job.id, job.request.name);
    return ok({{"id", job.id}, {"state", to_string(job.state)}}, 201);
  }

  HttpResponse cancel(Job& job) {
    if (is_final(job.state))
      return json_error(409, job.id + " is already " + to_string(job.state));
    job.cancel_requested = true;
    if (job.state == JobState::queued) {
      job.state = JobState::cancelled;
      job.ended_s = unix_now();
    } else if (auto it = running_.find(job.id); it != running_.end() && !it->second.stop_sent) {
      it->second.process.signal(SIGTERM);  // stops at a round boundary, checkpoint first
      it->second.stop_sent = Clock::now();
    }
    queue_.save(job);
    spdlog::info("serve: {} cancel requested ({})", job.id, to_string(job.state));
    return ok({{"id", job.id}, {"state", to_string(job.state)}, {"cancel_requested", true}}, 202);
  }

  const JobWatch* watch_of(const std::string& id) const {
    if (auto it = running_.find(id); it != running_.end()) return &it->second.watch;
    for (const auto& [fid, w] : finished_)
      if (fid == id) return &w;
    return nullptr;
  }

  std::vector<WatchedJob> watched() const {
    std::vector<WatchedJob> out;
    for (const auto& [id, job] : queue_.jobs()) {
      if (const JobWatch* w = watch_of(id)) out.push_back({&job, w});
    }
    return out;
  }

  nlohmann::json job_json(const Job& job, const JobWatch* w, bool detail) const {
    nlohmann::json j = {{"id", job.id},
                        {"name", job.request.name},
                        {"state", to_string(job.state)},
                        {"submitted_s", job.submitted_s},
                        {"started_s", null_or(job.started_s)},
                        {"ended_s", null_or(job.ended_s)},
                        {"starts", job.starts},
                        {"cancel_requested", job.cancel_requested},
                        {"run_dir", (fs::path(queue_.job_dir(job.id)) / "run").string()},
                        {"devices", job.request.devices.empty() ? nlohmann::json(device_ids_)
                                                                : nlohmann::json(job.request.devices)}};
    if (!job.error.empty()) j["error"] = job.error;
    j.update(w ? progress_json(job, *w) : job.result);
    if (!w || !detail) return j;
    const auto& status = w->status();
    const auto& summary = w->summary();
    j["spec"] = job.spec;
    j["plan"] = w->plan();
    if (status.is_object()) {
      for (const char* key : {"devices", "device_scale", "device_times", "heartbeat_round_trips", "timeline", "step",
                              "recovery"}) {
        if (status.contains(key)) j[key == std::string("devices") ? "health" : key] = status[key];
      }
    }
    nlohmann::json events = nlohmann::json::array();
    const auto& all = w->events();
    for (size_t i = all.size() > 50 ? all.size() - 50 : 0; i < all.size(); ++i) {
      events.push_back({{"event", all[i].kind}, {"text", all[i].text}, {"unix_s", all[i].unix_s},
                        {"devices", all[i].devices}});
    }
    j["events"] = events;
    j["recovery_s"] = w->recovery_seconds();
    if (summary.is_object()) {
      for (const char* key : {"test_accuracy", "final_loss", "samples_per_s", "train_seconds"})
        if (summary.contains(key)) j["summary"][key] = summary[key];
    }
    return j;
  }

  // Where a job stands, from its run folder's files.
  static nlohmann::json progress_json(const Job& job, const JobWatch& w) {
    const auto last = w.last();
    const auto& summary = w.summary();
    const bool summarized = job.state == JobState::finished && summary.is_object();
    nlohmann::json j = {{"round", last ? nlohmann::json(last->round) : nlohmann::json(nullptr)},
                        {"rounds", w.rounds()},
                        {"loss", last ? nlohmann::json(last->loss) : nlohmann::json(nullptr)},
                        // a finished job: its whole run's throughput, as its summary says
                        {"samples_per_s", summarized && summary.contains("samples_per_s") ? summary["samples_per_s"]
                                                                                          : nlohmann::json(w.samples_per_s())},
                        {"failures", w.count("failure")},
                        {"replans", w.count("replan") + w.count("adapt")}};
    if (summarized && summary.contains("test_accuracy")) j["test_accuracy"] = summary["test_accuracy"];
    if (w.status().is_object()) j["phase"] = w.status().value("phase", "");
    return j;
  }

  static nlohmann::json rounds_json(const JobWatch& w) {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& p : w.recent()) rows.push_back({p.round, p.loss, p.ms, p.unix_s, p.samples});
    return {{"columns", {"round", "loss", "ms", "unix_s", "samples"}}, {"rounds", rows}};
  }

  nlohmann::json cluster_json() const {
    // Health and speed as the running jobs see them.
    nlohmann::json devices = nlohmann::json::array();
    for (const auto& d : cluster_.devices) {
      const auto state = node_state_.find(d.id);
      nlohmann::json dev = {{"id", d.id},
                            {"host", d.host},
                            {"port", d.port},
                            {"memory_mb", d.memory_mb},
                            {"node", state == node_state_.end() ? "unknown" : state->second},
                            {"health", "unknown"},
                            {"speed_scale", nullptr},
                            {"job", nullptr}};
      for (const auto& [id, r] : running_) {
        const auto& s = r.watch.status();
        if (!s.is_object()) continue;
        if (s.contains("devices") && s["devices"].contains(d.id)) {
          dev["health"] = s["devices"][d.id];
          dev["job"] = id;
        }
        if (s.contains("device_scale") && s["device_scale"].contains(d.id)) dev["speed_scale"] = s["device_scale"][d.id];
        if (s.contains("heartbeat_round_trips") && s["heartbeat_round_trips"].contains(d.id))
          dev["heartbeat_last_ms"] = s["heartbeat_round_trips"][d.id].value("last_ms", 0.0);
      }
      devices.push_back(dev);
    }
    nlohmann::json links = nlohmann::json::array();
    for (const auto& l : cluster_.links) links.push_back({{"a", l.a}, {"b", l.b}, {"bandwidth_mbps", l.bandwidth_mbps}});
    return {{"cluster_file", cluster_file_},
            {"emulated", !emulated_dir_.empty()},
            {"default_bandwidth_mbps", cluster_.default_bandwidth_mbps},
            {"devices", devices},
            {"links", links}};
  }

  ServiceOptions o_;
  JobQueue queue_;
  asio::io_context io_;
  asio::signal_set signals_;
  asio::steady_timer tick_;
  std::optional<HttpServer> server_;
  std::string url_, program_, cluster_file_, emulated_dir_;
  std::string token_;  // required of every request when set (api_token.h)
  planner::Cluster cluster_;
  std::vector<std::string> device_ids_;
  std::map<std::string, Running> running_;
  std::deque<std::pair<std::string, JobWatch>> finished_;
  std::map<std::string, std::string> node_state_;  // device -> up | down | frozen (check_nodes)
  Clock::time_point nodes_checked_{};
  bool stopping_ = false;
};

}  // namespace

int run_service(const ServiceOptions& options) {
  if (options.state_dir.empty()) throw std::invalid_argument("serve: --state-dir is required");
  Service service(options);
  return service.run();
}

}  // namespace asteroid::apps::service
