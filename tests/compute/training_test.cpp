// Single-device training, evaluation, weights files, and the two commands
// (train, profile) with good and bad input.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <sstream>

#include "compute/dataset.h"
#include "compute/evaluate.h"
#include "compute/single_trainer.h"
#include "compute/stage_model.h"
#include "compute/weights_io.h"
#include "planner/json_io.h"
#include "test_util.h"

namespace asteroid::compute {
namespace {

namespace fs = std::filesystem;
using testing::read_text;
using testing::run_asteroid;
using testing::TempDir;

TEST(WeightsFile, RoundTripsAndRejectsForeignFiles) {
  TempDir dir;
  const at::Tensor w = torch::randn({1001});
  save_flat_weights(dir.file("w.bin"), w);
  EXPECT_EQ(fs::file_size(dir.file("w.bin")), 16u + 4 * 1001);
  EXPECT_TRUE(torch::equal(load_flat_weights(dir.file("w.bin")), w));
  fs::resize_file(dir.file("w.bin"), 100);
  EXPECT_THROW(load_flat_weights(dir.file("w.bin")), std::runtime_error);
  std::FILE* f = std::fopen(dir.file("x.bin").c_str(), "wb");
  std::fputs("hello world, not weights", f);
  std::fclose(f);
  EXPECT_THROW(load_flat_weights(dir.file("x.bin")), std::runtime_error);
  EXPECT_THROW(load_flat_weights(dir.file("missing.bin")), std::runtime_error);
  EXPECT_THROW(save_flat_weights("/nonexistent-dir/w.bin", w), std::runtime_error);
}

TEST(Evaluate, FlatWeightsOfStagesEvaluateLikeTheWholeModel) {
  const auto test = open_dataset("fmnist-cnn", Split::test);
  StageModel whole("fmnist-cnn", 0, 6, 3, default_optimizer_config(OptimizerKind::sgd));
  StageModel a("fmnist-cnn", 0, 2, 3, default_optimizer_config(OptimizerKind::sgd));
  StageModel b("fmnist-cnn", 2, 6, 3, default_optimizer_config(OptimizerKind::sgd));
  const EvalResult r = evaluate(whole, *test, 128, 300);
  EXPECT_EQ(r.samples, 300);
  EXPECT_GT(r.mean_loss, 1.5);  // untrained: about ln(10)
  const EvalResult s = evaluate_weights("fmnist-cnn", torch::cat({a.flat_weights(), b.flat_weights()}),
                                        *test, 77, 300);
  EXPECT_EQ(s.accuracy, r.accuracy);
  EXPECT_NEAR(s.mean_loss, r.mean_loss, 1e-5);
  EXPECT_THROW(evaluate(a, *test), std::invalid_argument);
  EXPECT_THROW(evaluate_weights("fmnist-cnn", torch::zeros({3}), *test), std::invalid_argument);
}

TrainOptions short_run(const TempDir& dir, const std::string& tag) {
  TrainOptions o;
  o.model = "fmnist-cnn";
  o.rounds = 40;
  o.batch = 32;
  o.seed = 7;
  o.test_samples = 500;
  o.progress = ProgressLine::Mode::off;
  o.metrics_path = dir.file(tag + ".jsonl");
  o.summary_path = dir.file(tag + ".json");
  o.weights_out = dir.file(tag + ".bin");
  return o;
}

TEST(SingleTraining, LearnsAndIsReproducible) {
  TempDir dir;
  const TrainResult r = run_single_training(short_run(dir, "a"));
  EXPECT_EQ(r.rounds, 40);
  EXPECT_EQ(r.samples, 40 * 32);
  EXPECT_GT(r.samples_per_s, 0);
  EXPECT_GT(r.test_accuracy, 0.5);  // 40 rounds of 32 already get well past chance
  EXPECT_EQ(r.test_samples, 500);

  std::istringstream lines(read_text(dir.file("a.jsonl")));
  std::string line;
  std::vector<double> loss;
  while (std::getline(lines, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["round"], int64_t(loss.size()));
    EXPECT_EQ(j["samples"], 32);
    EXPECT_GT(j["ms"].get<double>(), 0);
    loss.push_back(j["loss"]);
  }
  ASSERT_EQ(loss.size(), 40u);
  EXPECT_NEAR(loss[0], std::log(10.0), 0.3);
  EXPECT_LT(loss[37] + loss[38] + loss[39], loss[0] + loss[1] + loss[2]);

  const auto s = nlohmann::json::parse(read_text(dir.file("a.json")));
  EXPECT_EQ(s["rounds"], 40);
  EXPECT_EQ(s["test_accuracy"], r.test_accuracy);
  EXPECT_GT(s["samples_per_s"].get<double>(), 0);

  // Same options, same weights, bit for bit; another seed differs.
  run_single_training(short_run(dir, "b"));
  EXPECT_TRUE(torch::equal(load_flat_weights(dir.file("a.bin")), load_flat_weights(dir.file("b.bin"))));
  TrainOptions c = short_run(dir, "c");
  c.seed = 8;
  run_single_training(c);
  EXPECT_FALSE(torch::equal(load_flat_weights(dir.file("a.bin")), load_flat_weights(dir.file("c.bin"))));
}

TEST(SingleTraining, EqualsTheSameRoundsDoneByHand) {
  // The trainer is StageModel [0, L) + round_indices + step: nothing hidden.
  TempDir dir;
  TrainOptions o = short_run(dir, "h");
  o.rounds = 3;
  o.optimizer = default_optimizer_config(OptimizerKind::adam);
  run_single_training(o);
  const auto train = open_dataset("fmnist-cnn", Split::train);
  StageModel m("fmnist-cnn", 0, 6, 7, o.optimizer);
  for (int64_t r = 0; r < 3; ++r) {
    const Batch b = train->get(round_indices(train->size(), 32, 7, r));
    m.forward_backward_loss(r, b.inputs, b.labels, 32);
    m.step();
  }
  EXPECT_TRUE(torch::equal(m.flat_weights(), load_flat_weights(dir.file("h.bin"))));
}

TEST(SingleTraining, BadOptionsFailBeforeTraining) {
  TempDir dir;
  TrainOptions o = short_run(dir, "x");
  o.metrics_path = "/nonexistent-dir/m.jsonl";
  EXPECT_THROW(run_single_training(o), std::runtime_error);
  o = short_run(dir, "x");
  o.summary_path = dir.file("no-such-dir/s.json");
  EXPECT_THROW(run_single_training(o), std::runtime_error);
  o = short_run(dir, "x");
  o.model = "vgg99";
  EXPECT_THROW(run_single_training(o), std::invalid_argument);
  o = short_run(dir, "x");
  o.batch = 0;
  EXPECT_THROW(run_single_training(o), std::invalid_argument);
  o = short_run(dir, "x");
  o.data_dir = dir.path();  // no Fashion-MNIST files there
  EXPECT_THROW(run_single_training(o), std::runtime_error);
  EXPECT_FALSE(fs::exists(dir.file("x.bin")) && fs::file_size(dir.file("x.bin")) > 0);
}

// ---- the asteroid binary -------------------------------------------------------

TEST(TrainCommand, RunsAndWritesItsFiles) {
  TempDir dir;
  const auto r = run_asteroid("train --strategy single --model fmnist-cnn --epochs 1 --batch 64 --seed 7"
                              " --rounds 5 --test-samples 200 --progress plain --metrics " +
                              dir.file("m.jsonl") + " --summary " + dir.file("s.json") +
                              " --weights-out " + dir.file("w.bin"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("round 5/5"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("test accuracy"), std::string::npos) << r.output;
  const std::string m = read_text(dir.file("m.jsonl"));
  EXPECT_EQ(std::count(m.begin(), m.end(), '\n'), 5);
  const auto s = nlohmann::json::parse(read_text(dir.file("s.json")));
  EXPECT_EQ(s["rounds"], 5);
  EXPECT_TRUE(s.contains("test_accuracy") && s.contains("samples_per_s"));
  EXPECT_EQ(load_flat_weights(dir.file("w.bin")).numel(), 421642);
}

TEST(TrainCommand, BadInputIsAClearErrorAndNonZeroExit) {
  TempDir dir;
  auto r = run_asteroid("train --strategy single --model vgg99 --rounds 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unknown model 'vgg99'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("fmnist-cnn, fmnist-resnet, mobilenetv2, resnet18, efficientnet-b0, bert-small"),
            std::string::npos)
      << r.output;

  r = run_asteroid("train --strategy single --model fmnist-cnn --rounds 1 --metrics /nonexistent-dir/m.jsonl");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("/nonexistent-dir/m.jsonl"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("round 1/"), std::string::npos) << "trained before failing: " << r.output;

  r = run_asteroid("train --strategy single --model fmnist-cnn --rounds 1 --data-dir " + dir.path());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("train-images-idx3-ubyte.gz"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("dataset-fashion-mnist"), std::string::npos) << r.output;

  r = run_asteroid("train --strategy single --model fmnist-cnn --rounds 1 --optimizer rmsprop");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("rmsprop"), std::string::npos) << r.output;

  for (const std::string& rc : {r.output}) EXPECT_EQ(rc.find("terminate"), std::string::npos) << rc;
}

TEST(ProfileCommand, WritesAProfileTheLoaderAccepts) {
  TempDir dir;
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = run_asteroid("profile --model fmnist-cnn --device nx0 --out " + dir.file("p.json"));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_LT(s, 30.0) << "profiling fmnist-cnn with the default options must take under 30 s";
  const planner::Profile p = planner::load_profile(dir.file("p.json"));
  EXPECT_EQ(p.model, "fmnist-cnn");
  EXPECT_EQ(p.layers.size(), 6u);
  EXPECT_EQ(p.devices.at("nx0").batch, (std::vector<int>{1, 2, 4, 8, 16, 32, 64}));
}

TEST(Commands, EveryCommandTakesALogLevel) {
  TempDir dir;
  // After the command's name or before it.
  auto r = run_asteroid("profile --model fmnist-cnn --batches 1 --repeats 1 --log-level debug --out " +
                        dir.file("p.json"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir.file("p.json")));
  r = run_asteroid("--log-level warn profile --model fmnist-cnn --batches 1 --repeats 1 --out " + dir.file("q.json"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = run_asteroid("plan --log-level loud --help");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("loud"), std::string::npos) << r.output;
}

TEST(ProfileCommand, BadInputIsAClearErrorAndNonZeroExit) {
  TempDir dir;
  auto r = run_asteroid("profile --model vgg99 --out " + dir.file("p.json"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("bert-small"), std::string::npos) << r.output;
  r = run_asteroid("profile --model fmnist-cnn --out /nonexistent-dir/p.json");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("/nonexistent-dir/p.json"), std::string::npos) << r.output;
  r = run_asteroid("profile --model fmnist-cnn --batches 4,2 --out " + dir.file("p.json"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("increasing"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace asteroid::compute
