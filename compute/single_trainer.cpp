#include "compute/single_trainer.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <stdexcept>

#include "compute/dataset.h"
#include "compute/evaluate.h"
#include "compute/model_zoo.h"
#include "compute/stage_model.h"
#include "compute/weights_io.h"

namespace asteroid::compute {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TrainResult run_single_training(const TrainOptions& o) {
  if (o.strategy != "single")
    throw std::invalid_argument("run_single_training runs strategy 'single', not '" + o.strategy + "'");
  const ModelSpec& spec = find_model(o.model);
  if (o.epochs <= 0) throw std::invalid_argument("--epochs must be positive");
  if (o.batch <= 0) throw std::invalid_argument("--batch must be positive");
  if (o.rounds < 0) throw std::invalid_argument("--rounds must be >= 0");
  if (o.threads <= 0) throw std::invalid_argument("--threads must be positive");
  at::set_num_threads(o.threads);

  // Outputs first: a bad path must not cost a training run.
  MetricsWriter metrics(o.metrics_path);
  if (!o.summary_path.empty()) check_writable(o.summary_path, "summary file");
  if (!o.weights_out.empty()) check_writable(o.weights_out, "weights file");

  const auto train = open_dataset(o.model, Split::train, o.data_dir);
  const auto test = open_dataset(o.model, Split::test, o.data_dir);
  const int64_t per_epoch = rounds_per_epoch(train->size(), o.batch);
  if (per_epoch == 0)
    throw std::invalid_argument("--batch " + std::to_string(o.batch) + " exceeds the " +
                                std::to_string(train->size()) + " training samples");
  int64_t total = per_epoch * o.epochs;
  if (o.rounds > 0) total = std::min(total, o.rounds);

  StageModel model(o.model, 0, spec.layer_count(), o.seed, o.optimizer);
  ProgressLine progress(total, o.progress);

  TrainResult r;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t round = 0; round < total; ++round) {
    const auto tr = std::chrono::steady_clock::now();
    const Batch b = train->get(round_indices(train->size(), o.batch, o.seed, round));
    const auto res = model.forward_backward_loss(round, b.inputs, b.labels, double(o.batch));
    model.step();
    const double loss = res.loss_sum / double(o.batch);
    if (!std::isfinite(loss))
      throw std::runtime_error("training diverged: loss is " + std::to_string(loss) + " in round " +
                               std::to_string(round) + " (try a smaller --lr)");
    r.samples += o.batch;
    r.final_loss = loss;
    metrics.write({round, loss, o.batch, seconds_since(tr) * 1e3, {}});
    progress.update(round + 1, loss, r.samples);
  }
  r.rounds = total;
  r.train_seconds = seconds_since(t0);
  r.samples_per_s = r.train_seconds > 0 ? double(r.samples) / r.train_seconds : 0;
  progress.finish();

  // Inference batches of 500 images; token models keep [n, 128, 2048]
  // activations, so 32 sequences at a time keep evaluation under ~100 MB.
  const int64_t eval_batch = spec.input == InputKind::tokens ? 32 : 500;
  const EvalResult eval = evaluate(model, *test, eval_batch, o.test_samples);
  r.test_accuracy = eval.accuracy;
  r.test_loss = eval.mean_loss;
  r.test_samples = eval.samples;

  if (!o.summary_path.empty()) {
    TrainingSummary s;
    s.test_accuracy = r.test_accuracy;
    s.samples_per_s = r.samples_per_s;
    s.rounds = r.rounds;
    s.strings = {{"strategy", "single"}, {"model", o.model}, {"optimizer", optimizer_name(o.optimizer.kind)}};
    s.numbers = {{"test_loss", r.test_loss},
                 {"test_samples", double(r.test_samples)},
                 {"final_loss", r.final_loss},
                 {"train_seconds", r.train_seconds},
                 {"samples", double(r.samples)},
                 {"batch", double(o.batch)},
                 {"epochs", double(o.epochs)},
                 {"lr", o.optimizer.lr},
                 {"threads", double(o.threads)}};
    s.json = {{"seed", std::to_string(o.seed)}};  // exact for any 64-bit seed
    write_summary(o.summary_path, s);
  }
  if (!o.weights_out.empty()) save_flat_weights(o.weights_out, model.flat_weights());
  return r;
}

}  // namespace asteroid::compute
