// The optimizers against literal hand-computed steps and against torch::optim.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compute/optimizer.h"

namespace asteroid::compute {
namespace {

at::Tensor vec(std::vector<float> v) { return torch::tensor(v); }

void expect_values(const at::Tensor& t, std::vector<double> want, double tol = 1e-6) {
  ASSERT_EQ(t.numel(), int64_t(want.size()));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(t[i].item<double>(), want[i], tol) << "element " << i;
}

OptimizerConfig config(OptimizerKind kind, double lr) {
  OptimizerConfig c = default_optimizer_config(kind);
  c.lr = lr;
  return c;
}

TEST(Optimizer, SgdStepIsPMinusLrG) {
  Optimizer opt(config(OptimizerKind::sgd, 0.1));
  at::Tensor p = vec({1.0f, -2.0f});
  opt.step({p}, {vec({0.5f, 0.25f})});
  expect_values(p, {0.95, -2.025});
  EXPECT_EQ(opt.steps(), 1);
  EXPECT_EQ(opt.state().numel(), 0);  // plain SGD keeps nothing
}

TEST(Optimizer, SgdWeightDecayAddsToTheGradient) {
  OptimizerConfig c = config(OptimizerKind::sgd, 0.5);
  c.weight_decay = 0.1;
  Optimizer opt(c);
  at::Tensor p = vec({1.0f});
  opt.step({p}, {vec({0.0f})});
  expect_values(p, {0.95});
}

TEST(Optimizer, MomentumTwoLiteralSteps) {
  Optimizer opt(config(OptimizerKind::momentum, 0.1));  // momentum 0.9
  at::Tensor p = vec({1.0f, -2.0f});
  const at::Tensor g = vec({0.5f, 0.25f});
  opt.step({p}, {g});  // buf = g
  expect_values(p, {0.95, -2.025});
  opt.step({p}, {g});  // buf = 0.9 g + g = 1.9 g
  expect_values(p, {0.855, -2.0725});
  expect_values(opt.state(), {0.95, 0.475});
}

TEST(Optimizer, AdamTwoLiteralSteps) {
  Optimizer opt(config(OptimizerKind::adam, 0.1));  // betas 0.9, 0.999
  at::Tensor p = vec({1.0f, -2.0f});
  const at::Tensor g = vec({0.5f, -0.25f});
  opt.step({p}, {g});  // bias-corrected m / sqrt(v) = sign(g)
  expect_values(p, {0.9, -1.9});
  opt.step({p}, {g});
  expect_values(p, {0.8, -1.8});
  // state = exp_avg then exp_avg_sq
  const at::Tensor state = opt.state();
  expect_values(state.narrow(0, 0, 2), {0.095, -0.0475}, 1e-8);
  expect_values(state.narrow(0, 2, 2), {0.00049975, 0.0001249375}, 1e-10);
}

TEST(Optimizer, MatchesTorchOptimOverSeveralSteps) {
  for (OptimizerKind kind : {OptimizerKind::sgd, OptimizerKind::momentum, OptimizerKind::adam}) {
    SCOPED_TRACE(optimizer_name(kind));
    torch::manual_seed(3);
    at::Tensor mine = torch::randn({4, 3});
    at::Tensor ref = mine.clone().requires_grad_(true);
    const OptimizerConfig c = default_optimizer_config(kind);
    Optimizer opt(c);
    std::unique_ptr<torch::optim::Optimizer> torch_opt;
    if (kind == OptimizerKind::adam)
      torch_opt = std::make_unique<torch::optim::Adam>(std::vector<at::Tensor>{ref},
                                                       torch::optim::AdamOptions(c.lr));
    else
      torch_opt = std::make_unique<torch::optim::SGD>(
          std::vector<at::Tensor>{ref},
          torch::optim::SGDOptions(c.lr).momentum(kind == OptimizerKind::momentum ? c.momentum : 0));
    for (int s = 0; s < 4; ++s) {
      const at::Tensor g = torch::randn({4, 3});
      opt.step({mine}, {g});
      ref.mutable_grad() = g.clone();
      torch_opt->step();
    }
    EXPECT_TRUE(torch::allclose(mine, ref.detach(), 1e-5, 1e-6)) << mine << ref;
  }
}

TEST(Optimizer, StateRoundTripContinuesExactly) {
  for (OptimizerKind kind : {OptimizerKind::momentum, OptimizerKind::adam}) {
    SCOPED_TRACE(optimizer_name(kind));
    torch::manual_seed(4);
    std::vector<at::Tensor> p{torch::randn({3, 2}), torch::randn({5})};
    std::vector<at::Tensor> q{p[0].clone(), p[1].clone()};
    Optimizer a(default_optimizer_config(kind));
    const std::vector<at::Tensor> g1{torch::randn({3, 2}), torch::randn({5})};
    const std::vector<at::Tensor> g2{torch::randn({3, 2}), torch::randn({5})};
    a.step(p, g1);
    Optimizer b(default_optimizer_config(kind));
    b.step(q, g1);
    // Ship a's state to a fresh optimizer c, as a replica would receive it.
    Optimizer c(default_optimizer_config(kind));
    c.load_state(a.state(), a.steps());
    EXPECT_EQ(c.state().numel(), (kind == OptimizerKind::adam ? 2 : 1) * 11);
    EXPECT_TRUE(torch::equal(c.state(), a.state()));
    std::vector<at::Tensor> r{q[0].clone(), q[1].clone()};
    c.step(r, g2);
    b.step(q, g2);
    EXPECT_TRUE(torch::equal(r[0], q[0]) && torch::equal(r[1], q[1]));
    EXPECT_EQ(c.steps(), 2);
  }
}

TEST(Optimizer, BadInputIsAnError) {
  EXPECT_THROW(parse_optimizer("rmsprop"), std::invalid_argument);
  EXPECT_EQ(parse_optimizer("adam"), OptimizerKind::adam);
  EXPECT_THROW(Optimizer(config(OptimizerKind::sgd, -1)), std::invalid_argument);
  Optimizer m(default_optimizer_config(OptimizerKind::momentum));
  m.load_state(torch::zeros({7}), 3);
  at::Tensor p = torch::zeros({2});
  EXPECT_THROW(m.step({p}, {torch::zeros({2})}), std::invalid_argument);  // 7 values for 2 parameters
  Optimizer s(default_optimizer_config(OptimizerKind::sgd));
  EXPECT_THROW(s.load_state(torch::zeros({2}), 1), std::invalid_argument);
  EXPECT_THROW(s.step({p}, {}), std::invalid_argument);
}

}  // namespace
}  // namespace asteroid::compute
