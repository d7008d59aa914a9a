#include "compute/profiler.h"

#include <ATen/Parallel.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/torch.h>

#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "compute/layers.h"
#include "compute/model_zoo.h"
#include "compute/optimizer.h"
#include "messages/wire_codec.h"

namespace asteroid::compute {
namespace {

// A CPU allocator that counts the bytes alive. It allocates like c10's
// default CPU allocator (alloc_cpu/free_cpu) and keeps each block's size, so
// the data pointer is its own context and raw_allocate works (oneDNN uses it).
class CountingAllocator final : public c10::Allocator {
 public:
  static CountingAllocator& instance() {
    static CountingAllocator* a = new CountingAllocator;  // lives as long as the process
    return *a;
  }
  // Makes it the CPU allocator of this process (once; it stays installed).
  static void install() {
    static std::once_flag once;
    std::call_once(once, [] { c10::SetCPUAllocator(&instance(), /*priority=*/200); });
  }

  c10::DataPtr allocate(size_t n) const override {
    void* p = c10::alloc_cpu(n);
    if (p != nullptr) {
      std::lock_guard<std::mutex> lock(mu_);
      sizes_[p] = n;
      live_ += static_cast<int64_t>(n);
    }
    return {p, p, &raw_delete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &raw_delete; }

  int64_t live() const { return live_.load(); }

 private:
  static void raw_delete(void* p) {
    if (p == nullptr) return;
    instance().release(p);
    c10::free_cpu(p);
  }
  void release(void* p) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sizes_.find(p);
    if (it == sizes_.end()) return;
    live_ -= static_cast<int64_t>(it->second);
    sizes_.erase(it);
  }

  mutable std::mutex mu_;
  mutable std::unordered_map<void*, size_t> sizes_;
  mutable std::atomic<int64_t> live_{0};
};

// A synthetic input batch for the first layer: N(0, 1) images or uniform tokens.
torch::Tensor first_input(const ModelSpec& spec, int64_t batch, uint64_t seed) {
  std::vector<int64_t> shape{batch};
  shape.insert(shape.end(), spec.sample_shape.begin(), spec.sample_shape.end());
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  if (spec.input == InputKind::tokens)
    return torch::randint(spec.vocab_size, shape, gen, torch::kLong);
  return torch::randn(shape, gen, torch::kFloat);
}

// The layer's input as a stage sees it: a leaf that wants a gradient, except
// on the first layer.
torch::Tensor as_input(const torch::Tensor& x, bool first) {
  torch::Tensor in = x.detach();
  if (!first && in.is_floating_point()) in.requires_grad_(true);
  return in;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Milliseconds on the profiler's clock: wall time, or CPU time (ProfileOptions::cpu_time).
double clock_ms(bool cpu_time, int threads) {
  if (!cpu_time) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  timespec ts{};
  ::clock_gettime(threads == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

void check_batches(const std::vector<int>& b) {
  if (b.empty()) throw std::invalid_argument("profile: the batch size list is empty");
  for (size_t i = 0; i < b.size(); ++i)
    if (b[i] < 1 || (i > 0 && b[i] <= b[i - 1]))
      throw std::invalid_argument("profile: batch sizes must be positive and strictly increasing");
}

std::vector<planner::LayerInfo> layer_info(const ModelSpec& spec, std::vector<NamedLayer>& layers,
                                           int64_t batch, uint64_t seed) {
  CountingAllocator::install();
  const CountingAllocator& counter = CountingAllocator::instance();
  std::vector<planner::LayerInfo> info;
  torch::Tensor x = first_input(spec, batch, seed);
  for (size_t l = 0; l < layers.size(); ++l) {
    planner::LayerInfo li;
    li.name = layers[l].name;
    for (const auto& p : layers[l].module->parameters()) li.weight_bytes += double(p.numel() * p.element_size());
    torch::Tensor in = as_input(x, l == 0);
    torch::Tensor y;
    {
      torch::AutoGradMode grad(true);
      const int64_t before = counter.live();
      y = layers[l].module->forward(in);
      li.stash_bytes = double(std::max<int64_t>(0, counter.live() - before)) / double(batch);
    }
    li.out_bytes = double(y.numel() * y.element_size()) / double(batch);
    info.push_back(li);
    x = y.detach();
  }
  return info;
}

// Per optimizer, per layer: the median time of what a stage member does
// with the layer's parameters after a round: one optimizer step, then
// copies of the new weights and optimizer state (its snapshot for replicas
// and roll-back). The steps change the layers' weights.
std::map<planner::OptimizerKind, std::vector<double>> profile_updates(std::vector<NamedLayer>& layers,
                                                                      const ProfileOptions& o) {
  std::map<planner::OptimizerKind, std::vector<double>> out;
  for (const auto& named : kOptimizerNames) {
    std::vector<std::vector<at::Tensor>> params, grads;
    std::vector<Optimizer> optimizers;
    for (auto& layer : layers) {
      params.push_back(layer.module->parameters());
      std::vector<at::Tensor> g;
      for (const auto& p : params.back()) g.push_back(torch::randn_like(p).mul_(1e-3));
      grads.push_back(std::move(g));
      optimizers.emplace_back(default_optimizer_config(named.value));
    }
    std::vector<std::vector<double>> runs(layers.size());
    // The first step makes the optimizer state: not timed, as in training.
    for (int r = 0; r < 1 + o.warmup + o.repeats; ++r) {
      for (size_t l = 0; l < layers.size(); ++l) {
        const double t0 = clock_ms(o.cpu_time, o.threads);
        optimizers[l].step(params[l], grads[l]);
        torch::NoGradGuard no_grad;
        std::vector<at::Tensor> flat;
        for (const auto& p : params[l]) flat.push_back(p.reshape({-1}));
        if (!flat.empty()) torch::cat(flat).clone();
        optimizers[l].state().clone();
        const double ms = clock_ms(o.cpu_time, o.threads) - t0;
        if (r > o.warmup) runs[l].push_back(ms);
      }
    }
    std::vector<double>& row = out[named.value];
    for (const auto& v : runs) row.push_back(std::max(0.0, median(v)));
  }
  return out;
}

}  // namespace

std::vector<int> parse_batch_list(const std::string& text) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size())
      throw std::invalid_argument("--batches: '" + item + "' in '" + text + "' is not an integer");
    out.push_back(v);
  }
  check_batches(out);
  return out;
}

std::vector<planner::LayerInfo> measure_layers(const std::string& model, int batch, uint64_t seed) {
  const ModelSpec& spec = find_model(model);
  if (batch < 1) throw std::invalid_argument("measure_layers: batch must be positive");
  auto layers = build_layers(model, 0, spec.layer_count(), seed);
  return layer_info(spec, layers, batch, seed);
}

planner::Profile profile_model(const std::string& model, const std::string& device_id,
                               const ProfileOptions& o) {
  const ModelSpec& spec = find_model(model);
  check_batches(o.batches);
  if (o.repeats < 1) throw std::invalid_argument("profile: --repeats must be at least 1");
  if (o.warmup < 0) throw std::invalid_argument("profile: warm-up runs must be >= 0");
  if (o.threads < 1) throw std::invalid_argument("profile: --threads must be at least 1");
  if (device_id.empty()) throw std::invalid_argument("profile: empty device id");
  at::set_num_threads(o.threads);

  auto layers = build_layers(model, 0, spec.layer_count(), o.seed);
  const size_t L = layers.size();
  planner::Profile profile;
  profile.model = model;
  profile.layers = layer_info(spec, layers, o.batches.back(), o.seed);

  planner::DeviceProfile dev;
  dev.batch = o.batches;
  dev.fwd_ms.assign(L, {});
  dev.bwd_ms.assign(L, {});
  // Every layer's input and output gradient at every batch size, made once.
  const size_t K = o.batches.size();
  std::vector<std::vector<torch::Tensor>> inputs(K), grads(K);
  for (size_t k = 0; k < K; ++k) {
    torch::Tensor x = first_input(spec, o.batches[k], o.seed + 1);
    for (size_t l = 0; l < L; ++l) {
      torch::NoGradGuard no_grad;
      inputs[k].push_back(x);
      x = layers[l].module->forward(x);
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + 2 + l);
      grads[k].push_back(torch::randn(x.sizes(), gen, torch::kFloat));
    }
  }
  // Passes over every (batch size, layer), the warm-up passes first: each
  // point's repeats are spread over the whole profile, so a burst of load
  // from other processes (other nodes profiling on the same cores) shifts
  // one repeat of many points instead of every repeat of a few.
  std::vector<std::vector<std::vector<double>>> fwd(K, std::vector<std::vector<double>>(L)), bwd = fwd;
  for (int r = 0; r < o.warmup + o.repeats; ++r) {
    for (size_t k = 0; k < K; ++k) {
      for (size_t l = 0; l < L; ++l) {
        Layer& layer = *layers[l].module;
        torch::Tensor in = as_input(inputs[k][l], l == 0);
        torch::AutoGradMode grad(true);
        double t0 = clock_ms(o.cpu_time, o.threads);
        torch::Tensor y = layer.forward(in);
        const double f = clock_ms(o.cpu_time, o.threads) - t0;
        t0 = clock_ms(o.cpu_time, o.threads);
        torch::autograd::backward({y}, {grads[k][l]});
        const double g = clock_ms(o.cpu_time, o.threads) - t0;
        if (r >= o.warmup) {
          fwd[k][l].push_back(f);
          bwd[k][l].push_back(g);
        }
        // Keep gradient buffers allocated, as a training stage does between rounds.
        torch::NoGradGuard no_grad;
        for (auto& p : layer.parameters())
          if (p.grad().defined()) p.mutable_grad().zero_();
      }
    }
  }
  for (size_t l = 0; l < L; ++l)
    for (size_t k = 0; k < K; ++k) {
      dev.fwd_ms[l].push_back(std::max(1e-6, median(fwd[k][l])));
      dev.bwd_ms[l].push_back(std::max(1e-6, median(bwd[k][l])));
    }
  // Non-decreasing in the batch size, as COST_MODEL.md's allocation assumes:
  // measurement noise must not make 16 samples look cheaper than 8.
  for (size_t l = 0; l < L; ++l)
    for (size_t k = 1; k < o.batches.size(); ++k) {
      dev.fwd_ms[l][k] = std::max(dev.fwd_ms[l][k], dev.fwd_ms[l][k - 1]);
      dev.bwd_ms[l][k] = std::max(dev.bwd_ms[l][k], dev.bwd_ms[l][k - 1]);
    }
  if (o.codecs) dev.codecs = profile_codecs(o);
  if (o.updates) dev.update_ms = profile_updates(layers, o);
  profile.devices[device_id] = std::move(dev);
  return profile;
}

std::map<planner::Codec, planner::CodecSpeed> profile_codecs(const ProfileOptions& o) {
  constexpr int64_t kValues = 250000;  // 1 MB of float32
  const torch::Tensor values = torch::relu(
      torch::randn({kValues}, torch::TensorOptions().dtype(torch::kFloat)).mul_(0.5));
  const float* in = values.data_ptr<float>();
  std::vector<float> out(kValues);
  constexpr uint64_t kRowLength = 1000;  // rows of one sample's activations
  const uint64_t rows = kValues / kRowLength;
  const double mb = kValues * sizeof(float) / 1e6;
  std::map<planner::Codec, planner::CodecSpeed> speeds;
  for (wire_codec::Codec codec : wire_codec::kAllCodecs) {
    if (wire_codec::is_lossless(codec)) continue;
    std::vector<double> encode_ms, decode_ms;
    wire_codec::Encoded encoded;
    for (int run = 0; run < o.warmup + o.repeats; ++run) {
      double t0 = clock_ms(o.cpu_time, 1);
      encoded = wire_codec::encode(codec, in, rows, kRowLength, wire_codec::kDefaultBlock);
      const double e = clock_ms(o.cpu_time, 1) - t0;
      t0 = clock_ms(o.cpu_time, 1);
      wire_codec::decode(encoded.view(), out.data());
      const double d = clock_ms(o.cpu_time, 1) - t0;
      if (run < o.warmup) continue;
      encode_ms.push_back(e);
      decode_ms.push_back(d);
    }
    // A clock tick below the resolution would read as infinitely fast.
    speeds[codec] = {mb / (std::max(1e-3, median(encode_ms)) / 1e3), mb / (std::max(1e-3, median(decode_ms)) / 1e3)};
  }
  return speeds;
}

}  // namespace asteroid::compute
