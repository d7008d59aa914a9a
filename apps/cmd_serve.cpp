// `asteroid serve`: the training service (apps/service/service.h,
// docs/service.md), and its command-line clients `submit`, `jobs` and
// `cancel`, which speak the same HTTP API as any other client.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "apps/commands.h"
#include "apps/service/api_token.h"
#include "apps/service/http.h"
#include "apps/service/service.h"

namespace asteroid::apps {
namespace {

std::string default_server() {
  const char* s = std::getenv("ASTEROID_SERVER");
  return s && *s ? s : "http://127.0.0.1:8080";
}

std::string default_token_file() {
  const char* s = std::getenv("ASTEROID_TOKEN_FILE");
  return s && *s ? s : "";
}

// Where a client sends its requests, and with which bearer token.
struct Server {
  std::string url;
  std::string token_file;
};

// The answer's JSON, or an error naming the server's complaint.
nlohmann::json call(const Server& server, const std::string& method, const std::string& target,
                    const std::string& body = "") {
  const std::string token = server.token_file.empty() ? "" : service::read_token_file(server.token_file);
  const auto r = service::http_call(server.url, method, target, body, std::chrono::seconds(10), token);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(r.body);
  } catch (const nlohmann::json::exception&) {
    throw std::runtime_error(server.url + target + ": answered " + std::to_string(r.status) +
                             " with a body that is not JSON");
  }
  if (r.status >= 400) {
    throw std::runtime_error(server.url + target + ": " + std::to_string(r.status) + " " + j.value("error", r.body));
  }
  return j;
}

// `key=value`: the value as JSON when it parses (numbers, true, lists),
// else as a string.
void set_field(nlohmann::json& spec, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) throw std::invalid_argument("--set takes KEY=VALUE, got '" + assignment + "'");
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  try {
    spec[key] = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    spec[key] = text;
  }
}

std::string cell(const nlohmann::json& j, const char* key, const char* format) {
  if (!j.contains(key) || j[key].is_null()) return "-";
  char buf[64];
  if (j[key].is_number_float()) {
    std::snprintf(buf, sizeof buf, format, j[key].get<double>());
  } else if (j[key].is_number()) {
    std::snprintf(buf, sizeof buf, "%lld", j[key].get<long long>());
  } else {
    return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
  }
  return buf;
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto o = std::make_shared<service::ServiceOptions>();
  CLI::App* cmd = app.add_subcommand(
      "serve", "the training service: a queue of jobs on a cluster, an HTTP API, Prometheus metrics and a live "
               "dashboard; restarts resume unfinished jobs (docs/service.md)");
  cmd->add_option("--state-dir", o->state_dir, "where the service keeps its jobs, their run folders and checkpoints")
      ->required();
  cmd->add_option("--listen", o->listen, "HOST:PORT of the API and dashboard (port 0: any free port)")
      ->capture_default_str();
  cmd->add_flag("--insecure", o->insecure,
                "let --listen be beyond the loopback without the bearer token (default there: the token in "
                "STATE_DIR/api-token; warns)");
  cmd->add_flag("--require-token", o->require_token, "want the bearer token on the loopback too");
  cmd->add_option("--cluster", o->cluster_file, "cluster.json of running nodes");
  cmd->add_option("--tls-dir", o->tls_dir,
                  "with --cluster: mutual TLS with the certificates in DIR, instead of the cluster's tls.dir "
                  "(docs/security.md)")
      ->check(CLI::ExistingDirectory)
      ->needs("--cluster");
  cmd->add_option("--env", o->env, "or an emulated preset (A-D) the service brings up in STATE_DIR/cluster and keeps");
  cmd->add_option("--bandwidth", o->bandwidth_mbps, "--env: link bandwidth in Mbit/s (default 1000)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--cpu-budget", o->cpu_budget, "--env: cores the whole preset may use")->check(CLI::PositiveNumber);
  cmd->add_option("--cpu", o->cpu_mode, "--env: CPU emulation (auto | cgroup | throttle | none)")->capture_default_str();
  cmd->add_option("--net", o->net_mode, "--env: link emulation (auto | netns | relay | none)")->capture_default_str();
  cmd->add_option("--max-body", o->max_body, "largest request body in bytes")->capture_default_str();
  cmd->add_option("--max-connections", o->max_connections, "open API connections at most")->capture_default_str();
  cmd->add_option("--ready-file", o->ready_file, "write the API's URL here once it listens");
  cmd->add_option("--program", o->program, "the asteroid binary jobs run (default: this one)");
  cmd->callback([o] {
    if (int code = service::run_service(*o)) std::exit(code);
  });

  struct ClientCli {
    Server server{default_server(), default_token_file()};
    std::string spec_file, spec_json, id;
    std::vector<std::string> sets;
    bool json = false;
  };
  auto c = std::make_shared<ClientCli>();
  const auto server_option = [&](CLI::App* sub) {
    sub->add_option("--server", c->server.url, "the service's URL ($ASTEROID_SERVER)")->capture_default_str();
    sub->add_option("--token-file", c->server.token_file,
                    "the service's bearer token (its STATE_DIR/api-token; $ASTEROID_TOKEN_FILE)");
  };

  CLI::App* submit = app.add_subcommand("submit", "submit a job to a running `asteroid serve`; prints its id");
  server_option(submit);
  submit->add_option("spec", c->spec_json, "the job spec as JSON (fields: train's flags with underscores)");
  submit->add_option("--file", c->spec_file, "or a file holding it");
  submit->add_option("--set", c->sets, "KEY=VALUE added to the spec (repeatable), e.g. --set model=fmnist-cnn");
  submit->callback([c] {
    nlohmann::json spec = nlohmann::json::object();
    if (!c->spec_file.empty()) {
      std::ifstream in(c->spec_file);
      if (!in) throw std::invalid_argument("cannot read " + c->spec_file);
      try {
        spec = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        throw std::invalid_argument(c->spec_file + ": not JSON: " + e.what());
      }
    } else if (!c->spec_json.empty()) {
      try {
        spec = nlohmann::json::parse(c->spec_json);
      } catch (const nlohmann::json::exception& e) {
        throw std::invalid_argument(std::string("the spec is not JSON: ") + e.what());
      }
    }
    for (const auto& s : c->sets) set_field(spec, s);
    const auto answer = call(c->server, "POST", "/jobs", spec.dump());
    std::printf("%s\n", answer.value("id", "").c_str());
  });

  CLI::App* jobs = app.add_subcommand("jobs", "list the jobs of a running `asteroid serve`, or show one");
  server_option(jobs);
  jobs->add_option("id", c->id, "a job's id: its full status as JSON");
  jobs->add_flag("--json", c->json, "the list as JSON");
  jobs->callback([c] {
    if (!c->id.empty()) {
      std::printf("%s\n", call(c->server, "GET", "/jobs/" + c->id).dump(2).c_str());
      return;
    }
    const auto answer = call(c->server, "GET", "/jobs");
    if (c->json) {
      std::printf("%s\n", answer.dump(2).c_str());
      return;
    }
    std::printf("%-12s %-10s %-12s %8s %9s %10s  %s\n", "id", "state", "phase", "round", "loss", "samples/s", "name");
    for (const auto& j : answer["jobs"]) {
      std::printf("%-12s %-10s %-12s %8s %9s %10s  %s\n", cell(j, "id", "%s").c_str(), cell(j, "state", "%s").c_str(),
                  cell(j, "phase", "%s").c_str(), cell(j, "round", "%.0f").c_str(), cell(j, "loss", "%.4f").c_str(),
                  cell(j, "samples_per_s", "%.0f").c_str(), cell(j, "name", "%s").c_str());
    }
  });

  CLI::App* cancel = app.add_subcommand("cancel", "cancel a job of a running `asteroid serve` (its checkpoint stays)");
  server_option(cancel);
  cancel->add_option("id", c->id, "the job's id")->required();
  cancel->callback([c] {
    const auto answer = call(c->server, "DELETE", "/jobs/" + c->id);
    std::printf("%s %s\n", answer.value("id", "").c_str(), answer.value("state", "").c_str());
  });
}

}  // namespace asteroid::apps
