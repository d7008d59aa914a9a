#include "actors/node.h"

#include <ATen/Parallel.h>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <memory>

#include "actors/node_context.h"
#include "actors/system_config.h"
#include "compute/model_zoo.h"
#include "messages/transport.h"

namespace asteroid::actors {
namespace {

int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The published actor of a node. Blocking, hence on a thread of its own, so
// that profiling (long compute) never starves the node's I/O.
void node_actor(caf::blocking_actor* self, std::shared_ptr<NodeContext> node) {
  bool running = true;
  self->receive_while([&] { return running; })(
      [&](messages::WireMessage& wire) -> messages::WireMessage {
        auto decoded = messages::from_wire(std::move(wire));
        if (!decoded.ok()) {
          return messages::to_wire(messages::Error{messages::ErrorCode::invalid_message, decoded.error});
        }
        if (std::holds_alternative<messages::Hello>(*decoded.message)) {
          messages::NodeInfo info;
          info.node_id = node->node_id;
          info.pid = static_cast<uint32_t>(::getpid());
          info.memory_budget_bytes = node->memory_budget_bytes;
          info.cpu_share = node->cpu_share;
          info.clock_us = now_us();
          info.models = compute::model_names();
          return messages::to_wire(info);
        }
        return messages::to_wire(messages::Error{
            messages::ErrorCode::invalid_request,
            std::string("a node does not accept ") + messages::kind_name(*decoded.message) + " messages"});
      },
      [&](caf::exit_msg& exit) {
        self->fail_state(exit.reason);
        running = false;
      });
}

}  // namespace

int run_node(const NodeOptions& options) {
  // Termination signals are taken by sigwait below, in this thread only.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  at::set_num_threads(options.threads);
  auto node = std::make_shared<NodeContext>();
  node->node_id = options.id;
  node->memory_budget_bytes = static_cast<uint64_t>(options.memory_mb * 1048576.0);
  node->cpu_share = options.cpu_share;

  AsteroidConfig config(SystemOptions{}, node);
  caf::actor_system system(config);
  auto actor = system.spawn(node_actor, node);
  auto port = system.middleman().publish(actor, options.port, options.host.c_str(), true);
  if (!port) {
    std::fprintf(stderr, "asteroid node %s: cannot listen on %s:%u: %s\n", options.id.c_str(), options.host.c_str(),
                 options.port, system.render(port.error()).c_str());
    caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
    return 1;
  }
  std::printf("asteroid node %s listening on %s:%u\n", options.id.c_str(), options.host.c_str(), *port);
  std::fflush(stdout);

  int signal = 0;
  sigwait(&signals, &signal);
  spdlog::info("node {}: signal {}, shutting down", options.id, signal);
  caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
  node->stop_stages();
  return 0;
}

}  // namespace asteroid::actors
