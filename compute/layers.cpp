#include "compute/layers.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <functional>
#include <stdexcept>

#include "compute/model_zoo.h"
#include "compute/seed_mix.h"
#include "compute/torchscript_model.h"

namespace asteroid::compute {
namespace {

namespace nn = torch::nn;
using torch::Tensor;

enum class Act { none, relu, relu6, silu };

Tensor activate(const Tensor& x, Act a) {
  switch (a) {
    case Act::none: return x;
    case Act::relu: return torch::relu(x);
    case Act::relu6: return torch::hardtanh(x, 0.0, 6.0);
    case Act::silu: return torch::silu(x);
  }
  return x;
}

// A linear layer through oneDNN (MKL-DNN). Debian's libtorch has no
// optimised BLAS (BLAS_INFO=generic: the reference netlib libblas, about
// 4 GFLOP/s here), and torch::linear calls it; oneDNN's inner product, which
// libtorch carries for convolutions, is 5-40x faster from batch 8 up (see
// docs/compute.md). Same parameters and autograd as nn::Linear.
Tensor linear(const nn::Linear& l, const Tensor& x) {
  if (!at::hasMKLDNN()) return torch::linear(x, l->weight, l->bias);
  std::vector<int64_t> shape = x.sizes().vec();
  const int64_t in = shape.back();
  shape.back() = l->weight.size(0);
  Tensor y = at::mkldnn_linear(x.reshape({-1, in}).contiguous().to_mkldnn(), l->weight, l->bias);
  return y.to_dense().view(shape);
}

// A convolution. libtorch 1.13 sends a one-sample batch with a small input
// (groups 1, <= 20480 values, not a non-strided 1x1) to its "slow_conv2d"
// path (im2col + the reference BLAS), about 10x slower than two samples
// through oneDNN. Such a sample runs as two copies instead and keeps the
// first: exact (the copy's gradient is zero) and as fast as a batch of two.
// Pipeline stages get one-sample slices whenever a group member has y_d = 1.
Tensor conv2d(nn::Conv2d c, const Tensor& x) {
  const auto& o = c->options;
  const bool pointwise = (*o.kernel_size())[0] == 1 && (*o.kernel_size())[1] == 1 &&
                         (*o.stride())[0] == 1 && (*o.stride())[1] == 1;
  if (x.dim() == 4 && x.size(0) == 1 && o.groups() == 1 && x.numel() <= 20480 && !pointwise) {
    std::vector<int64_t> two = x.sizes().vec();
    two[0] = 2;
    return c->forward(x.expand(two)).narrow(0, 0, 1);
  }
  return c->forward(x);
}

// Group norm with 8 groups: per-sample statistics, so a sample's result does
// not depend on which other samples share its micro-batch (batch norm would
// make pipeline and data-parallel runs differ from single-device ones).
constexpr int64_t kGroups = 8;

// conv -> [group norm] -> activation -> [2x2 max-pool]
class ConvBlock : public Layer {
 public:
  struct Options {
    int64_t in, out, kernel = 3, stride = 1, groups = 1;
    bool norm = false;
    Act act = Act::relu;
    bool pool = false;
  };
  explicit ConvBlock(const Options& o) : o_(o) {
    conv_ = register_module("conv", nn::Conv2d(nn::Conv2dOptions(o.in, o.out, o.kernel)
                                                   .stride(o.stride)
                                                   .padding(o.kernel / 2)
                                                   .groups(o.groups)
                                                   .bias(!o.norm)));
    if (o.norm) norm_ = register_module("norm", nn::GroupNorm(nn::GroupNormOptions(kGroups, o.out)));
  }
  Tensor forward(const Tensor& x) override {
    Tensor y = conv2d(conv_, x);
    if (o_.norm) y = norm_(y);
    y = activate(y, o_.act);
    if (o_.pool) y = torch::max_pool2d(y, 2);
    return y;
  }

 private:
  Options o_;
  nn::Conv2d conv_{nullptr};
  nn::GroupNorm norm_{nullptr};
};

class MaxPool : public Layer {
 public:
  Tensor forward(const Tensor& x) override { return torch::max_pool2d(x, 2); }
};

// [flatten] -> linear -> activation
class Dense : public Layer {
 public:
  Dense(int64_t in, int64_t out, Act act) : act_(act) {
    fc_ = register_module("fc", nn::Linear(in, out));
  }
  Tensor forward(const Tensor& x) override { return activate(linear(fc_, x.flatten(1)), act_); }

 private:
  Act act_;
  nn::Linear fc_{nullptr};
};

// global average pool -> linear
class PoolClassifier : public Layer {
 public:
  PoolClassifier(int64_t in, int64_t classes) { fc_ = register_module("fc", nn::Linear(in, classes)); }
  Tensor forward(const Tensor& x) override { return linear(fc_, x.mean({2, 3})); }

 private:
  nn::Linear fc_{nullptr};
};

// ResNet basic block: relu(shortcut(x) + conv(relu(conv(x)))), with or without group norm.
class BasicBlock : public Layer {
 public:
  BasicBlock(int64_t in, int64_t out, int64_t stride, bool norm) : norm_(norm) {
    conv1_ = register_module("conv1", conv(in, out, 3, stride));
    conv2_ = register_module("conv2", conv(out, out, 3, 1));
    if (norm) {
      gn1_ = register_module("gn1", nn::GroupNorm(nn::GroupNormOptions(kGroups, out)));
      gn2_ = register_module("gn2", nn::GroupNorm(nn::GroupNormOptions(kGroups, out)));
    }
    if (stride != 1 || in != out) {
      short_ = register_module("shortcut", conv(in, out, 1, stride));
      if (norm) gns_ = register_module("gns", nn::GroupNorm(nn::GroupNormOptions(kGroups, out)));
    }
  }
  // The residual branch starts at zero (its last convolution or norm scale),
  // so an untrained block is the identity: with no batch norm this is what
  // lets a deep stack train at the default learning rate (Fixup, Zhang et al.
  // 2019; zero-gamma, Goyal et al. 2017).
  void zero_branch() {
    torch::NoGradGuard no_grad;
    if (norm_) {
      gn2_->weight.zero_();
    } else {
      conv2_->weight.zero_();
      conv2_->bias.zero_();
    }
  }
  Tensor forward(const Tensor& x) override {
    Tensor y = conv2d(conv1_, x);
    if (norm_) y = gn1_(y);
    y = conv2d(conv2_, torch::relu(y));
    if (norm_) y = gn2_(y);
    Tensor s = x;
    if (!short_.is_empty()) {
      s = conv2d(short_, x);
      if (norm_) s = gns_(s);
    }
    return torch::relu(y + s);
  }

 private:
  nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride) {
    return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(!norm_));
  }
  bool norm_;
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, short_{nullptr};
  nn::GroupNorm gn1_{nullptr}, gn2_{nullptr}, gns_{nullptr};
};

// MobileNetV2 inverted residual / EfficientNet MBConv:
// [expand 1x1] -> depthwise kxk -> [squeeze-excite] -> project 1x1, + x when shapes agree.
class InvertedResidual : public Layer {
 public:
  InvertedResidual(int64_t in, int64_t out, int64_t stride, int64_t expand, int64_t kernel, Act act,
                   bool squeeze_excite)
      : act_(act), residual_(stride == 1 && in == out) {
    const int64_t hidden = in * expand;
    if (expand != 1) {
      expand_ = register_module("expand", nn::Conv2d(nn::Conv2dOptions(in, hidden, 1).bias(false)));
      gn_e_ = register_module("gn_e", nn::GroupNorm(nn::GroupNormOptions(kGroups, hidden)));
    }
    dw_ = register_module("dw", nn::Conv2d(nn::Conv2dOptions(hidden, hidden, kernel)
                                               .stride(stride)
                                               .padding(kernel / 2)
                                               .groups(hidden)
                                               .bias(false)));
    gn_d_ = register_module("gn_d", nn::GroupNorm(nn::GroupNormOptions(kGroups, hidden)));
    if (squeeze_excite) {
      const int64_t squeezed = std::max<int64_t>(1, in / 4);
      se_reduce_ = register_module("se_reduce", nn::Conv2d(nn::Conv2dOptions(hidden, squeezed, 1)));
      se_expand_ = register_module("se_expand", nn::Conv2d(nn::Conv2dOptions(squeezed, hidden, 1)));
    }
    project_ = register_module("project", nn::Conv2d(nn::Conv2dOptions(hidden, out, 1).bias(false)));
    gn_p_ = register_module("gn_p", nn::GroupNorm(nn::GroupNormOptions(kGroups, out)));
  }
  // Zero-gamma: a residual block starts as the identity (see BasicBlock).
  void zero_branch() {
    torch::NoGradGuard no_grad;
    if (residual_) gn_p_->weight.zero_();
  }
  Tensor forward(const Tensor& x) override {
    Tensor y = x;
    if (!expand_.is_empty()) y = activate(gn_e_(conv2d(expand_, y)), act_);
    y = activate(gn_d_(conv2d(dw_, y)), act_);
    if (!se_reduce_.is_empty()) {
      Tensor s = y.mean({2, 3}, /*keepdim=*/true);
      s = torch::sigmoid(se_expand_(torch::silu(se_reduce_(s))));
      y = y * s;
    }
    y = gn_p_(conv2d(project_, y));
    return residual_ ? y + x : y;
  }

 private:
  Act act_;
  bool residual_;
  nn::Conv2d expand_{nullptr}, dw_{nullptr}, se_reduce_{nullptr}, se_expand_{nullptr},
      project_{nullptr};
  nn::GroupNorm gn_e_{nullptr}, gn_d_{nullptr}, gn_p_{nullptr};
};

// BERT: token + position embeddings, layer norm. Input int64 [n, seq].
class Embeddings : public Layer {
 public:
  Embeddings(int64_t vocab, int64_t seq, int64_t hidden) {
    tokens_ = register_module("tokens", nn::Embedding(vocab, hidden));
    positions_ = register_module("positions", nn::Embedding(seq, hidden));
    norm_ = register_module("norm", nn::LayerNorm(nn::LayerNormOptions({hidden}).eps(1e-12)));
  }
  Tensor forward(const Tensor& x) override {
    Tensor pos = torch::arange(x.size(1), torch::dtype(torch::kLong));
    return norm_(tokens_(x) + positions_(pos).unsqueeze(0));
  }

 private:
  nn::Embedding tokens_{nullptr}, positions_{nullptr};
  nn::LayerNorm norm_{nullptr};
};

// Post-norm Transformer encoder layer (as BERT), no dropout, no mask.
class EncoderLayer : public Layer {
 public:
  EncoderLayer(int64_t hidden, int64_t heads, int64_t ffn) : heads_(heads) {
    qkv_ = register_module("qkv", nn::Linear(hidden, 3 * hidden));
    out_ = register_module("out", nn::Linear(hidden, hidden));
    norm1_ = register_module("norm1", nn::LayerNorm(nn::LayerNormOptions({hidden}).eps(1e-12)));
    ff1_ = register_module("ff1", nn::Linear(hidden, ffn));
    ff2_ = register_module("ff2", nn::Linear(ffn, hidden));
    norm2_ = register_module("norm2", nn::LayerNorm(nn::LayerNormOptions({hidden}).eps(1e-12)));
  }
  Tensor forward(const Tensor& x) override {
    const int64_t n = x.size(0), s = x.size(1), h = x.size(2), d = h / heads_;
    Tensor qkv = linear(qkv_, x).view({n, s, 3, heads_, d}).permute({2, 0, 3, 1, 4});  // [3,n,heads,s,d]
    Tensor q = qkv[0], k = qkv[1], v = qkv[2];
    Tensor att = torch::softmax(torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(d)), -1);
    Tensor ctx = torch::matmul(att, v).transpose(1, 2).reshape({n, s, h});
    Tensor y = norm1_(x + linear(out_, ctx));
    return norm2_(y + linear(ff2_, torch::gelu(linear(ff1_, y))));
  }

 private:
  int64_t heads_;
  nn::Linear qkv_{nullptr}, out_{nullptr}, ff1_{nullptr}, ff2_{nullptr};
  nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
};

// BERT classification head: pooler (first token, linear, tanh), then linear.
class BertHead : public Layer {
 public:
  BertHead(int64_t hidden, int64_t classes) {
    pool_ = register_module("pooler", nn::Linear(hidden, hidden));
    fc_ = register_module("fc", nn::Linear(hidden, classes));
  }
  Tensor forward(const Tensor& x) override {
    return linear(fc_, torch::tanh(linear(pool_, x.select(1, 0))));
  }

 private:
  nn::Linear pool_{nullptr}, fc_{nullptr};
};

using Factory = std::function<std::shared_ptr<Layer>()>;

template <typename T, typename... Args>
Factory make(Args... args) {
  return [=] { return std::make_shared<T>(args...); };
}

std::vector<Factory> fmnist_cnn() {
  return {make<ConvBlock>(ConvBlock::Options{1, 32}), make<MaxPool>(),
          make<ConvBlock>(ConvBlock::Options{32, 64}), make<MaxPool>(),
          make<Dense>(64 * 7 * 7, 128, Act::relu), make<Dense>(128, 10, Act::none)};
}

std::vector<Factory> fmnist_resnet() {
  // No stem pooling: the first block's stride-2 convolution learns the
  // down-sampling (one point of test accuracy over a max-pool after one epoch).
  return {make<ConvBlock>(ConvBlock::Options{1, 32}),  // 28x28
          make<BasicBlock>(32, 32, 2, false),   // 14x14
          make<BasicBlock>(32, 64, 2, false),   // 7x7
          make<BasicBlock>(64, 64, 1, false),   // 7x7
          make<BasicBlock>(64, 128, 2, false),  // 4x4
          make<BasicBlock>(128, 128, 1, false), // 4x4
          make<PoolClassifier>(128, 10)};
}

std::vector<Factory> mobilenetv2() {
  ConvBlock::Options stem{3, 32};
  stem.norm = true;
  stem.act = Act::relu6;
  std::vector<Factory> f{make<ConvBlock>(stem)};
  // (expand t, channels c, repeats n, stride s); stride 1 in the second row for 32x32 inputs.
  const int64_t cfg[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 1}, {6, 32, 3, 2}, {6, 64, 4, 2},
                             {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  int64_t in = 32;
  for (const auto& r : cfg)
    for (int64_t i = 0; i < r[2]; ++i) {
      f.push_back(make<InvertedResidual>(in, r[1], i == 0 ? r[3] : 1, r[0], int64_t{3}, Act::relu6,
                                         false));
      in = r[1];
    }
  ConvBlock::Options head{320, 1280, 1};
  head.norm = true;
  head.act = Act::relu6;
  f.push_back(make<ConvBlock>(head));
  f.push_back(make<PoolClassifier>(1280, 10));
  return f;
}

std::vector<Factory> resnet18() {
  ConvBlock::Options stem{3, 64};
  stem.norm = true;
  std::vector<Factory> f{make<ConvBlock>(stem)};
  int64_t in = 64;
  for (int64_t c : {64, 128, 256, 512})
    for (int i = 0; i < 2; ++i) {
      f.push_back(make<BasicBlock>(in, c, (i == 0 && c != 64) ? 2 : 1, true));
      in = c;
    }
  f.push_back(make<PoolClassifier>(512, 10));
  return f;
}

std::vector<Factory> efficientnet_b0() {
  ConvBlock::Options stem{3, 32};
  stem.norm = true;
  stem.act = Act::silu;
  std::vector<Factory> f{make<ConvBlock>(stem)};
  // (expand, kernel, stride, channels, repeats); stem stride 1 for 32x32 inputs.
  const int64_t cfg[7][5] = {{1, 3, 1, 16, 1},  {6, 3, 2, 24, 2},  {6, 5, 2, 40, 2}, {6, 3, 2, 80, 3},
                             {6, 5, 1, 112, 3}, {6, 5, 2, 192, 4}, {6, 3, 1, 320, 1}};
  int64_t in = 32;
  for (const auto& r : cfg)
    for (int64_t i = 0; i < r[4]; ++i) {
      f.push_back(
          make<InvertedResidual>(in, r[3], i == 0 ? r[2] : 1, r[0], r[1], Act::silu, true));
      in = r[3];
    }
  ConvBlock::Options head{320, 1280, 1};
  head.norm = true;
  head.act = Act::silu;
  f.push_back(make<ConvBlock>(head));
  f.push_back(make<PoolClassifier>(1280, 10));
  return f;
}

std::vector<Factory> bert_small(const ModelSpec& spec) {
  const int64_t hidden = 512, heads = 8, ffn = 2048;
  std::vector<Factory> f{make<Embeddings>(spec.vocab_size, spec.sample_shape[0], hidden)};
  for (int i = 0; i < 4; ++i) f.push_back(make<EncoderLayer>(hidden, heads, ffn));
  f.push_back(make<BertHead>(hidden, spec.num_classes));
  return f;
}

std::vector<Factory> factories(const ModelSpec& spec) {
  const std::string& n = spec.name;
  if (n == "fmnist-cnn") return fmnist_cnn();
  if (n == "fmnist-resnet") return fmnist_resnet();
  if (n == "mobilenetv2") return mobilenetv2();
  if (n == "resnet18") return resnet18();
  if (n == "efficientnet-b0") return efficientnet_b0();
  if (n == "bert-small") return bert_small(spec);
  throw std::logic_error("model '" + n + "' is in the zoo table but has no modules");
}

enum class InitPolicy { torch_default, residual, bert };

// PyTorch's default initialisation (kaiming-uniform with a = sqrt(5), i.e.
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases); `residual`:
// He-normal convolutions (std sqrt(2 / fan_in), zero biases) and residual
// branches that start at zero; BERT's: normal(0, 0.02) weights, zero biases.
// Drawn from `gen` in module order.
void initialise(torch::nn::Module& layer, InitPolicy policy, at::Generator& gen) {
  torch::NoGradGuard no_grad;
  for (const auto& m : layer.modules(/*include_self=*/true)) {
    auto fan_in_uniform = [&](Tensor& w, Tensor& b) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(w[0].numel()));
      w.uniform_(-bound, bound, gen);
      if (b.defined()) b.uniform_(-bound, bound, gen);
    };
    if (auto* c = dynamic_cast<nn::Conv2dImpl*>(m.get())) {
      if (policy == InitPolicy::residual) {
        c->weight.normal_(0.0, std::sqrt(2.0 / double(c->weight[0].numel())), gen);
        if (c->bias.defined()) c->bias.zero_();
      } else {
        fan_in_uniform(c->weight, c->bias);
      }
    } else if (auto* l = dynamic_cast<nn::LinearImpl*>(m.get())) {
      if (policy == InitPolicy::bert) {
        l->weight.normal_(0.0, 0.02, gen);
        if (l->bias.defined()) l->bias.zero_();
      } else {
        fan_in_uniform(l->weight, l->bias);
      }
    } else if (auto* e = dynamic_cast<nn::EmbeddingImpl*>(m.get())) {
      e->weight.normal_(0.0, policy == InitPolicy::bert ? 0.02 : 1.0, gen);
    } else if (auto* g = dynamic_cast<nn::GroupNormImpl*>(m.get())) {
      g->weight.fill_(1.0);
      g->bias.zero_();
    } else if (auto* ln = dynamic_cast<nn::LayerNormImpl*>(m.get())) {
      ln->weight.fill_(1.0);
      ln->bias.zero_();
    }
  }
  if (policy == InitPolicy::residual) {
    if (auto* block = dynamic_cast<BasicBlock*>(&layer)) block->zero_branch();
    if (auto* block = dynamic_cast<InvertedResidual*>(&layer)) block->zero_branch();
  }
}

}  // namespace

std::vector<NamedLayer> build_layers(const std::string& model, int begin, int end, uint64_t seed) {
  const ModelSpec& spec = find_model(model);
  check_layer_range(model, begin, end);
  if (const ScriptedModel* scripted = find_scripted(model)) return build_scripted_layers(*scripted, begin, end);
  std::vector<Factory> f = factories(spec);
  if (static_cast<int>(f.size()) != spec.layer_count())
    throw std::logic_error("model '" + model + "': " + std::to_string(f.size()) +
                           " modules but the zoo table lists " +
                           std::to_string(spec.layer_count()) + " layers");
  const InitPolicy policy = spec.input == InputKind::tokens ? InitPolicy::bert
                            : model == "fmnist-cnn"           ? InitPolicy::torch_default
                                                              : InitPolicy::residual;
  std::vector<NamedLayer> layers;
  for (int i = begin; i < end; ++i) {
    auto module = f[i]();
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(mix_seed(seed, 0x4c41594552ULL, i));
    initialise(*module, policy, gen);
    layers.push_back({spec.layer_names[i], std::move(module)});
  }
  return layers;
}

}  // namespace asteroid::compute
