// Composing a training topology by hand with Asteroid as a library: no
// profile, no planner for the first plan. Two stages of fmnist-cnn; the
// first run by a group of two devices that split every micro-batch 10/6,
// the second by one device; int8 activations and gradients between them.
// The job runs under the job supervisor as `asteroid train` runs it: a
// device that dies is recovered from (a re-plan on the survivors and a
// replay from the last committed round), and every committed round and
// supervision event reaches the callbacks below.
//
//   asteroid node --port 7101 --id a &
//   asteroid node --port 7102 --id b &
//   asteroid node --port 7103 --id c &
//   custom_topology 127.0.0.1:7101 127.0.0.1:7102 127.0.0.1:7103 [ROUNDS]
//
// It prints one line per committed round and per event, then a summary
// (rounds, failures, the final plan), writes custom_topology.jsonl (the
// job's metrics) and leaves the nodes running. Exit status 0 when every
// round committed.
#include <asteroid/apps/distributed_training.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <string>

using namespace asteroid;

static planner::Device device(const std::string& id, const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) throw std::invalid_argument("expected host:port, got '" + address + "'");
  planner::Device d;
  d.id = id;
  d.host = address.substr(0, colon);
  d.port = std::stoi(address.substr(colon + 1));
  d.memory_mb = 4096;
  return d;
}

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: %s HOST:PORT HOST:PORT HOST:PORT [ROUNDS] (three running asteroid nodes)\n", argv[0]);
    return 2;
  }
  spdlog::set_default_logger(spdlog::stderr_color_mt("asteroid"));  // stdout: rounds and events only
  try {
    apps::DistributedOptions job;
    job.train.model = "fmnist-cnn";  // layers: conv1 pool1 conv2 pool2 fc1 fc2
    job.train.batch = 64;
    job.train.rounds = argc == 5 ? std::stoll(argv[4]) : 30;
    job.train.metrics_path = "custom_topology.jsonl";
    job.train.test_samples = 1000;
    job.train.progress = compute::ProgressLine::Mode::off;
    job.cluster.devices = {device("a", argv[1]), device("b", argv[2]), device("c", argv[3])};
    job.plan.strategy = "custom";
    job.plan.batch = 64;
    job.plan.microbatches = 4;
    job.plan.microbatch_size = 16;
    job.plan.stages = {
        {0, 4, {{"a", 10}, {"b", 6}}, wire_codec::Codec::int8},  // convolutions: a group of two
        {4, 6, {{"c", 16}}},                                     // the classifier: one device
    };
    job.replicate_every = 1;  // c's stage is replicated to a neighbour: c may die too
    job.on_commit = [](const actors::RoundReport& report) {
      std::printf("round %llu loss %.4f %.1f ms\n", (unsigned long long)report.round, report.loss, report.ms);
      std::fflush(stdout);
    };
    job.on_event = [](const supervision::SupervisionEvent& event, supervision::JobSupervisor&) {
      std::printf("event %s: %s\n", event.kind.c_str(), event.text.c_str());
      std::fflush(stdout);
    };
    const apps::DistributedResult result = apps::run_distributed_training(job);
    std::printf("committed %lld rounds, %zu failure(s), test accuracy %.2f %%\nfinal plan:",
                (long long)result.rounds, result.failures.size(), 100 * result.test_accuracy);
    for (const auto& stage : result.final_plan.stages) {
      std::printf(" [%d, %d)", stage.begin, stage.end);
      for (const auto& d : stage.devices) std::printf(" %s:%d", d.id.c_str(), d.samples);
      std::printf(";");
    }
    std::printf("\n");
    return result.rounds == job.train.rounds ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
