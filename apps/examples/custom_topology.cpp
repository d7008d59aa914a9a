// Composing a training topology by hand from Asteroid's actors: no planner,
// no profile. Two stages of fmnist-cnn; the first run by a group of two
// devices that split every micro-batch 10/6, the second by one device.
//
//   build/bin/asteroid node --port 7101 --id a &
//   build/bin/asteroid node --port 7102 --id b &
//   build/bin/asteroid node --port 7103 --id c &
//   build/bin/example_custom_topology 127.0.0.1:7101 127.0.0.1:7102 127.0.0.1:7103
//
// It deploys one stage actor per group member (CAF remote spawn on each
// node), runs 30 rounds of 4 micro-batches, prints the loss and the step x
// stage grid of the last round, and leaves the nodes running.
#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>

#include <cstdio>
#include <string>

#include "actors/coordinator.h"
#include "actors/system_config.h"
#include "actors/trace.h"

using namespace asteroid;

static planner::Device device(const std::string& id, const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) throw std::invalid_argument("expected host:port, got '" + address + "'");
  planner::Device d;
  d.id = id;
  d.host = address.substr(0, colon);
  d.port = std::stoi(address.substr(colon + 1));
  return d;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s HOST:PORT HOST:PORT HOST:PORT (three running asteroid nodes)\n", argv[0]);
    return 2;
  }
  try {
    actors::JobSpec job;
    job.model = "fmnist-cnn";  // layers: conv1 pool1 conv2 pool2 fc1 fc2
    job.cluster.devices = {device("a", argv[1]), device("b", argv[2]), device("c", argv[3])};
    job.plan.strategy = "custom";
    job.plan.batch = 64;
    job.plan.microbatches = 4;
    job.plan.microbatch_size = 16;
    job.plan.stages = {
        {0, 4, {{"a", 10}, {"b", 6}}},  // convolutions: a group of two
        {4, 6, {{"c", 16}}},            // the classifier: one device
    };
    job.trace = true;

    actors::AsteroidConfig config;
    caf::actor_system system(config);
    actors::Coordinator coordinator(system, job);
    coordinator.deploy();
    // Rounds commit once the replica of the single-device stage (c) is
    // stored on a's node, which happens while the next round runs.
    auto print = [](const actors::RoundReport& report) {
      if (report.round % 5 == 4) {
        std::printf("round %2llu  loss %.4f  %.1f ms\n", (unsigned long long)report.round, report.loss, report.ms);
      }
    };
    while (coordinator.next_round() < 30) {
      for (const auto& report : coordinator.run_round()) print(report);
    }
    for (const auto& report : coordinator.flush()) print(report);
    actors::MemberNames names{{{0, 0}, "a"}, {{0, 1}, "b"}, {{1, 0}, "c"}};
    std::printf("\nThe last round, step by step:\n%s", actors::step_grid(coordinator.trace(), 29, names).c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
