#include "apps/distributed_training.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>

#include "actors/coordinator.h"
#include "actors/system_config.h"
#include "actors/trace.h"
#include "compute/dataset.h"
#include "compute/evaluate.h"
#include "compute/model_zoo.h"
#include "compute/training_log.h"
#include "compute/weights_io.h"
#include "messages/tensor_codec.h"

namespace asteroid::apps {
namespace {

messages::OptimizerSpec to_spec(const compute::OptimizerConfig& c) {
  messages::OptimizerSpec s;
  s.kind = static_cast<messages::OptimizerKind>(c.kind);
  s.lr = c.lr;
  s.momentum = c.momentum;
  s.beta1 = c.beta1;
  s.beta2 = c.beta2;
  s.eps = c.eps;
  s.weight_decay = c.weight_decay;
  return s;
}

void check_plan(const planner::Plan& plan, const compute::TrainOptions& o) {
  if (plan.batch != o.batch) {
    throw std::invalid_argument("the plan is for mini-batches of " + std::to_string(plan.batch) +
                                " samples but --batch is " + std::to_string(o.batch));
  }
  const int layers = compute::layer_count(o.model);
  if (plan.stages.empty() || plan.stages.front().begin != 0 || plan.stages.back().end != layers) {
    throw std::invalid_argument("the plan's stages must cover layers [0, " + std::to_string(layers) + ") of " +
                                o.model);
  }
}

actors::MemberNames member_names(const planner::Plan& plan) {
  actors::MemberNames names;
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    for (size_t m = 0; m < plan.stages[s].devices.size(); ++m) {
      names[{static_cast<uint32_t>(s), static_cast<uint32_t>(m)}] = plan.stages[s].devices[m].id;
    }
  }
  return names;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

compute::TrainResult run_distributed_training(const DistributedOptions& options) {
  const compute::TrainOptions& o = options.train;
  compute::find_model(o.model);
  check_plan(options.plan, o);
  at::set_num_threads(o.threads);

  compute::MetricsWriter metrics(o.metrics_path);
  if (!o.summary_path.empty()) compute::check_writable(o.summary_path, "summary file");
  if (!o.weights_out.empty()) compute::check_writable(o.weights_out, "weights file");
  if (!options.trace_path.empty()) compute::check_writable(options.trace_path, "trace file");

  const auto test = compute::open_dataset(o.model, compute::Split::test, o.data_dir);
  const int64_t train_size = compute::open_dataset(o.model, compute::Split::train, o.data_dir)->size();
  int64_t total = compute::rounds_per_epoch(train_size, o.batch) * o.epochs;
  if (o.rounds > 0) total = std::min(total, o.rounds);

  actors::AsteroidConfig config;
  caf::actor_system system(config);
  actors::JobSpec spec;
  spec.cluster = options.cluster;
  spec.plan = options.plan;
  spec.model = o.model;
  spec.seed = o.seed;
  spec.data_seed = o.seed;
  spec.optimizer = to_spec(o.optimizer);
  spec.trace = !options.trace_path.empty() || options.print_grid;
  spec.connect_timeout = std::chrono::milliseconds(static_cast<int64_t>(options.connect_timeout_s * 1000));
  actors::Coordinator coordinator(system, spec);
  coordinator.deploy();

  compute::ProgressLine progress(total, o.progress);
  compute::TrainResult result;
  const auto t0 = std::chrono::steady_clock::now();
  auto record = [&](const actors::RoundReport& report) {
    if (!std::isfinite(report.loss)) {
      throw std::runtime_error("training diverged: loss is " + std::to_string(report.loss) + " in round " +
                               std::to_string(report.round) + " (try a smaller --lr)");
    }
    result.samples += o.batch;
    result.final_loss = report.loss;
    metrics.write({static_cast<int64_t>(report.round), report.loss, o.batch, report.ms, {}});
    progress.update(static_cast<int64_t>(report.round) + 1, report.loss, result.samples);
  };
  while (static_cast<int64_t>(coordinator.next_round()) < total) {
    for (const auto& report : coordinator.run_round()) record(report);
  }
  for (const auto& report : coordinator.flush()) record(report);
  result.rounds = total;
  result.train_seconds = seconds_since(t0);
  result.samples_per_s = result.train_seconds > 0 ? static_cast<double>(result.samples) / result.train_seconds : 0;
  progress.finish();

  std::vector<at::Tensor> parts;
  for (const auto& state : coordinator.fetch_states()) parts.push_back(messages::to_tensor(state.weights));
  const at::Tensor weights = at::cat(parts);
  const compute::EvalResult eval = compute::evaluate_weights(o.model, weights, *test, 500, o.test_samples);
  result.test_accuracy = eval.accuracy;
  result.test_loss = eval.mean_loss;
  result.test_samples = eval.samples;

  const auto names = member_names(options.plan);
  if (!options.trace_path.empty()) {
    std::ofstream(options.trace_path) << actors::perfetto_json(coordinator.trace(), names);
  }
  if (options.print_grid && total > 0) {
    std::printf("Pipeline of the last round (stage, F/B, micro-batch):\n%s",
                actors::step_grid(coordinator.trace(), coordinator.next_round() - 1, names).c_str());
  }
  if (!o.summary_path.empty()) {
    compute::TrainingSummary s;
    s.test_accuracy = result.test_accuracy;
    s.samples_per_s = result.samples_per_s;
    s.rounds = result.rounds;
    s.strings = {{"strategy", options.plan.strategy}, {"model", o.model},
                 {"optimizer", compute::to_string(o.optimizer.kind)}};
    s.numbers = {{"test_loss", result.test_loss},
                 {"test_samples", static_cast<double>(result.test_samples)},
                 {"final_loss", result.final_loss},
                 {"train_seconds", result.train_seconds},
                 {"samples", static_cast<double>(result.samples)},
                 {"batch", static_cast<double>(o.batch)},
                 {"microbatches", static_cast<double>(options.plan.microbatches)},
                 {"stages", static_cast<double>(options.plan.stages.size())},
                 {"lr", o.optimizer.lr}};
    if (options.plan.predicted_round_ms > 0) {
      s.numbers["predicted_samples_per_s"] = o.batch * 1000.0 / options.plan.predicted_round_ms;
    }
    s.json = {{"seed", std::to_string(o.seed)}};
    compute::write_summary(o.summary_path, s);
  }
  if (!o.weights_out.empty()) compute::save_flat_weights(o.weights_out, weights);
  return result;
}

}  // namespace asteroid::apps
