#include <CLI/CLI.hpp>

#include <cstdlib>

#include "actors/node.h"
#include "actors/transport.h"
#include "apps/commands.h"

namespace asteroid::apps {

void add_node_command(CLI::App& app) {
  auto options = std::make_shared<actors::NodeOptions>();
  auto* cmd = app.add_subcommand("node", "Run one device's node process (until SIGTERM)");
  cmd->add_option("--port", options->port, "Port to listen on: TCP for CAF, UDP at the same number for heartbeats (0: any free port, printed)");
  cmd->add_option("--host", options->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--id", options->id, "Device id")->capture_default_str();
  cmd->add_option("--memory-mb", options->memory_mb, "Memory budget in MiB (0: unlimited)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--cpu-share", options->cpu_share,
                  "In-process CPU throttle: fraction of one core (0: none; used when cgroups are not available)")
      ->check(CLI::Range(0.0, 64.0));
  cmd->add_option("--threads", options->threads, "Torch intra-op threads")->check(CLI::PositiveNumber);
  cmd->add_option("--peer-deadline", options->peer_deadline_ms,
                  "ms without an answer after which a pipeline peer counts as unreachable (a partition)")
      ->capture_default_str()
      ->check(CLI::Range(100, 600000));
  auto fault_point = [](const std::string& v) {
    const auto colon = v.find(':');
    const std::string event = v.substr(0, colon);
    const bool known = event == "forward" || event == "backward" || event == "allreduce" || event == "replicate" ||
                       event == "step" || event == "assign" || event == "state" || event == "peers";
    const bool number = colon != std::string::npos && colon + 1 < v.size() &&
                        v.find_first_not_of("0123456789", colon + 1) == std::string::npos;
    return known && number ? std::string() : "expected EVENT:ROUND, e.g. allreduce:3";
  };
  auto* crash =
      cmd->add_option("--crash-at", options->crash_at,
                      "Fault injection: SIGKILL this node when a stage reaches EVENT in round ROUND "
                      "(EVENT:ROUND, EVENT one of forward, backward, allreduce, replicate, step; or assign: a stage "
                      "here assigned to start at ROUND or later; or state: a stage here asked for its state of ROUND "
                      "or later; or peers: the node asked to connect to its plan peers for the ROUND-th time, "
                      "counting from 0)")
          ->check(fault_point);
  auto* freeze = cmd->add_option("--freeze-at", options->freeze_at,
                                 "Fault injection: SIGSTOP this node (frozen until SIGCONT) at EVENT:ROUND, as --crash-at")
                    ->check(fault_point)
                    ->excludes(crash);
  auto* hang = cmd->add_option("--hang-at", options->hang_at,
                               "Fault injection: the stage (or node actor) reaching EVENT:ROUND blocks for good while "
                               "the node lives on and answers heartbeats, as --crash-at")
                  ->check(fault_point)
                  ->excludes(crash)
                  ->excludes(freeze);
  auto* fail = cmd->add_option("--fail-at", options->fail_at,
                               "Fault injection: the stage reaching EVENT:ROUND throws, once (a stage that fails on "
                               "its own while the node lives on), as --crash-at")
                  ->check(fault_point)
                  ->excludes(crash)
                  ->excludes(freeze)
                  ->excludes(hang);
  cmd->add_option("--stage-restarts", options->stage_restarts,
                  "Stage actors here that fail on their own (an exception in their compute) are restarted in place "
                  "by the node, at most this many within a minute; past that the node gives up and the job "
                  "re-plans without this device (0: give up at once)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--anonymous-at", options->anonymous_at,
                  "Fault injection: the first gradient of round ROUND (gradient:ROUND) a stage here sends goes "
                  "without a sender, as when the receiver's node has no route to this one")
      ->check([](const std::string& v) {
        const bool number = v.size() > 9 && v.find_first_not_of("0123456789", 9) == std::string::npos;
        return v.rfind("gradient:", 0) == 0 && number ? std::string() : "expected gradient:ROUND";
      })
      ->excludes(crash)
      ->excludes(freeze)
      ->excludes(hang)
      ->excludes(fail);
  auto insecure = std::make_shared<bool>(false);
  auto allow = std::make_shared<std::string>();
  cmd->add_option("--tls-dir", options->tls_dir,
                  "mutual TLS with the cluster's certificates in DIR (ca.pem, ID.pem, ID.key: asteroid certs; "
                  "docs/security.md)")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--allow", *allow,
                  "with --tls-dir: who may connect, ID[=SHA256],... (the coordinator's id is \"coordinator\"); "
                  "default: everyone the cluster's authority certified")
      ->needs("--tls-dir");
  auto* plain = cmd->add_flag("--insecure", *insecure,
                              "listen beyond the loopback without TLS (connections are neither encrypted nor "
                              "authenticated; warns)");
  plain->excludes("--tls-dir");
  cmd->callback([options, insecure, allow] {
    if (options->tls_dir.empty()) actors::check_plain_listening("node " + options->id, options->host, *insecure);
    if (!allow->empty()) {
      try {
        options->allow = actors::parse_allow_list(*allow);
      } catch (const std::invalid_argument& e) {
        throw CLI::ValidationError("--allow", e.what());
      }
    }
    std::exit(actors::run_node(*options));
  });
}

}  // namespace asteroid::apps
