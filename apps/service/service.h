// `asteroid serve`: the long-running training service (docs/service.md).
//
// One process, one thread: an Asio io_context runs the HTTP API (http.h),
// a 250 ms tick that watches the running jobs and starts queued ones
// (job_queue.h), and the stop signals. Each job runs as its own
// `asteroid train --cluster ... --out STATE/jobs/ID/run` process, which
// drives the runtime's job supervision and writes the run folder the
// service reads (job_watch.h): the API never waits for a round, a job that
// crashes takes nothing else with it, and a finished job's memory goes
// with its process.
//
// Restart: everything the service knows is in its state folder. Started
// again on it after SIGKILL, a job that was running is started again with
// --resume from its checkpoint and the nodes' committed states (its
// process died with the service); SIGTERM stops every job at a round
// boundary with a checkpoint first, and they resume at the next start.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace asteroid::apps::service {

struct ServiceOptions {
  std::string state_dir;
  std::string listen = "127.0.0.1:8080";  // port 0: any free port (printed)
  // Beyond the loopback every request but /healthz and the dashboard's page
  // must carry "Authorization: Bearer TOKEN", the token in STATE/api-token
  // (made at the first such start, 0600); `insecure` drops that (warns).
  bool insecure = false;
  bool require_token = false;  // the token on the loopback too
  // Where the jobs run: a cluster.json of running nodes, or an emulated
  // preset the service brings up in STATE/cluster, keeps across its own
  // restarts and brings down when it stops on SIGTERM.
  std::string cluster_file;
  std::string tls_dir;  // with cluster_file: the jobs' certificates (train --tls-dir)
  std::string env;
  double bandwidth_mbps = 0, cpu_budget = 0;
  std::string cpu_mode = "auto", net_mode = "auto";
  // The program every job runs (default: this binary), e.g. for tests.
  std::string program;
  size_t max_body = 1 << 20, max_connections = 64;
  // A job asked to stop gets this long to checkpoint and exit before SIGKILL.
  std::chrono::seconds stop_grace{120};
  // Finished jobs whose watch (rounds, events) stays in memory for /metrics.
  size_t watched_finished = 8;
  // Written once the API listens: "http://HOST:PORT\n" (for scripts and tests).
  std::string ready_file;
};

// Runs until SIGTERM or SIGINT; returns the process's exit code. Throws
// std::runtime_error when it cannot start (state folder, cluster, address).
int run_service(const ServiceOptions& options);

}  // namespace asteroid::apps::service
