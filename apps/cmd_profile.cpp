// `asteroid profile`: per-layer profile of a model (zoo or TorchScript) on this machine,
// written as profile.json (../docs/FORMATS.md).
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "apps/commands.h"
#include "compute/model_zoo.h"
#include "compute/profiler.h"
#include "compute/torchscript_model.h"
#include "planner/json_io.h"

namespace asteroid::apps {
namespace {

struct ProfileCli {
  std::string model, data, test_data, out, device, batches = "1,2,4,8,16,32,64";
  compute::ProfileOptions options;
};

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "local";
  return buf;
}

void run_profile(ProfileCli& cli) {
  cli.model = compute::resolve_model(cli.model, cli.data, cli.test_data);  // unknown: the error lists the known ones
  cli.options.batches = compute::parse_batch_list(cli.batches);
  if (cli.device.empty()) cli.device = host_name();
  // Fail on an unwritable --out before spending time on measurements.
  if (std::FILE* f = std::fopen(cli.out.c_str(), "a")) {
    std::fclose(f);
  } else {
    throw std::runtime_error("cannot write profile '" + cli.out + "'");
  }
  const auto t0 = std::chrono::steady_clock::now();
  const planner::Profile p = compute::profile_model(cli.model, cli.device, cli.options);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  planner::save_profile(p, cli.out);

  const auto& d = p.devices.at(cli.device);
  const size_t k = d.batch.size() - 1;
  std::printf("%-12s %12s %12s %12s %10s %10s  (ms at batch %d)\n", "layer", "weight_B",
              "out_B/smp", "stash_B/smp", "fwd_ms", "bwd_ms", d.batch[k]);
  for (size_t l = 0; l < p.layers.size(); ++l)
    std::printf("%-12s %12.0f %12.0f %12.0f %10.3f %10.3f\n", p.layers[l].name.c_str(),
                p.layers[l].weight_bytes, p.layers[l].out_bytes, p.layers[l].stash_bytes,
                d.fwd_ms[l][k], d.bwd_ms[l][k]);
  std::printf("profiled %s as device '%s' in %.1f s -> %s\n", cli.model.c_str(), cli.device.c_str(),
              s, cli.out.c_str());
}

}  // namespace

void add_profile_command(CLI::App& app) {
  auto cli = std::make_shared<ProfileCli>();
  CLI::App* cmd = app.add_subcommand("profile", "per-layer profile of a model on this machine");
  cmd->add_option("--model", cli->model, "zoo model, or a TorchScript file (docs/custom-models.md)")->required();
  cmd->add_option("--data", cli->data, "a TorchScript model's data: a torch.save file (default Fashion-MNIST)");
  cmd->add_option("--test-data", cli->test_data, "its test split in a file of its own");
  cmd->add_option("--out", cli->out, "profile.json to write")->required();
  cmd->add_option("--device", cli->device, "device id in the profile (default: the host name)");
  cmd->add_option("--batches", cli->batches, "comma-separated batch sizes")->capture_default_str();
  cmd->add_option("--repeats", cli->options.repeats, "measured runs per point (median kept)")
      ->capture_default_str();
  cmd->add_option("--warmup", cli->options.warmup, "discarded runs before them")->capture_default_str();
  cmd->add_option("--threads", cli->options.threads, "Torch threads")->capture_default_str();
  cmd->add_option("--seed", cli->options.seed, "weights and synthetic inputs")->capture_default_str();
  cmd->callback([cli] { run_profile(*cli); });
}

}  // namespace asteroid::apps
