#include "compute/dataset.h"

#include <torch/torch.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <stdexcept>

#include "compute/model_zoo.h"
#include "compute/seed_mix.h"
#include "compute/tensor_dataset.h"

namespace asteroid::compute {
namespace {

const char* kDefaultFmnistDir = "/usr/share/datasets/fashion-mnist";
const char* kPackage = "dataset-fashion-mnist";

void check_indices(const std::vector<int64_t>& indices, int64_t size) {
  for (int64_t i : indices)
    if (i < 0 || i >= size)
      throw std::out_of_range("sample index " + std::to_string(i) + " outside [0, " +
                              std::to_string(size) + ")");
}

// The whole decompressed content of a gzip file.
std::vector<uint8_t> read_gzip(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw std::runtime_error("missing data file " + path + " (install the Debian package " +
                             kPackage + ": apt-get install " + kPackage + ")");
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw std::runtime_error("cannot open data file " + path + ": " + std::strerror(errno));
  std::vector<uint8_t> out;
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    const int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int err = 0;
      std::string what = gzerror(f, &err);
      gzclose(f);
      throw std::runtime_error("corrupt or truncated data file " + path + " (" + what +
                               "); reinstall the Debian package " + kPackage);
    }
    if (n == 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + n);
  }
  // gzread returns 0 both at a clean end and when the compressed stream stops early.
  int err = 0;
  const char* msg = gzerror(f, &err);
  std::string what = msg ? msg : "";
  gzclose(f);
  if (err != Z_OK && err != Z_STREAM_END)
    throw std::runtime_error("corrupt or truncated data file " + path + " (" + what +
                             "); reinstall the Debian package " + kPackage);
  return out;
}

uint32_t big_endian32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// An IDX file of unsigned bytes: checks the magic and the dimensions, returns
// the payload and the dimensions.
std::vector<uint8_t> read_idx(const std::string& path, int dims, std::vector<int64_t>& shape) {
  std::vector<uint8_t> raw = read_gzip(path);
  const size_t header = 4 + 4 * size_t(dims);
  auto truncated = [&](const std::string& detail) {
    return std::runtime_error("truncated or corrupt data file " + path + " (" + detail +
                              "); reinstall the Debian package " + kPackage);
  };
  if (raw.size() < header) throw truncated("only " + std::to_string(raw.size()) + " bytes");
  const uint32_t magic = big_endian32(raw.data());
  if (magic != 0x800u + uint32_t(dims))
    throw truncated("bad IDX magic number " + std::to_string(magic));
  shape.clear();
  size_t payload = 1;
  for (int d = 0; d < dims; ++d) {
    shape.push_back(big_endian32(raw.data() + 4 + 4 * d));
    payload *= size_t(shape.back());
  }
  if (raw.size() - header != payload)
    throw truncated("expected " + std::to_string(payload) + " data bytes, found " +
                    std::to_string(raw.size() - header));
  return std::vector<uint8_t>(raw.begin() + header, raw.end());
}

class FashionMnist : public Dataset {
 public:
  FashionMnist(const std::string& dir, Split split) {
    const std::string prefix = dir + "/" + (split == Split::train ? "train" : "t10k");
    std::vector<int64_t> ishape, lshape;
    images_ = read_idx(prefix + "-images-idx3-ubyte.gz", 3, ishape);
    labels_ = read_idx(prefix + "-labels-idx1-ubyte.gz", 1, lshape);
    if (ishape[1] != 28 || ishape[2] != 28 || ishape[0] != lshape[0])
      throw std::runtime_error("Fashion-MNIST files in " + dir + " disagree: " +
                               std::to_string(ishape[0]) + " images of " + std::to_string(ishape[1]) +
                               "x" + std::to_string(ishape[2]) + ", " + std::to_string(lshape[0]) +
                               " labels");
    for (uint8_t l : labels_)
      if (l >= 10) throw std::runtime_error("label " + std::to_string(l) + " out of range in " + prefix +
                                            "-labels-idx1-ubyte.gz");
    size_ = ishape[0];
  }
  int64_t size() const override { return size_; }
  Batch get(const std::vector<int64_t>& indices) const override {
    check_indices(indices, size_);
    const int64_t n = static_cast<int64_t>(indices.size());
    Batch b{torch::empty({n, 1, 28, 28}, torch::kFloat), torch::empty({n}, torch::kLong)};
    float* x = b.inputs.data_ptr<float>();
    int64_t* y = b.labels.data_ptr<int64_t>();
    // The usual Fashion-MNIST normalisation: mean 0.2860, std 0.3530 of pixel / 255.
    constexpr float kMean = 0.2860f, kStd = 0.3530f;
    for (int64_t k = 0; k < n; ++k) {
      const uint8_t* src = images_.data() + indices[k] * 784;
      for (int j = 0; j < 784; ++j) x[k * 784 + j] = (src[j] / 255.0f - kMean) / kStd;
      y[k] = labels_[indices[k]];
    }
    return b;
  }

 private:
  std::vector<uint8_t> images_, labels_;
  int64_t size_ = 0;
};

// Gaussian from two uniform 64-bit words (Box-Muller).
double gaussian(uint64_t a, uint64_t b) {
  const double u1 = 1.0 - unit_double(a);  // (0, 1]
  const double u2 = unit_double(b);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// Images of a fixed pattern per class (per channel: an offset in [-1, 1] plus
// a sinusoid of amplitude 1) plus N(0, 0.25) noise, generated on demand from
// (seed, index): label then pixels, nothing kept in memory but the class
// templates. The offsets make the classes separable after global pooling, so
// a few hundred rounds show a falling loss.
class SyntheticImages : public Dataset {
 public:
  // `set_seed` fixes the class templates (shared by the train and test
  // splits); `seed` the samples of this split.
  SyntheticImages(uint64_t set_seed, uint64_t seed, int64_t size, std::vector<int64_t> shape,
                  int64_t classes)
      : seed_(seed), size_(size), shape_(std::move(shape)), classes_(classes) {
    const int64_t c = shape_[0], h = shape_[1], w = shape_[2];
    per_sample_ = c * h * w;
    templates_.resize(size_t(classes_ * per_sample_));
    for (int64_t k = 0; k < classes_; ++k)
      for (int64_t ch = 0; ch < c; ++ch) {
        const uint64_t s = mix_seed(set_seed, 0x54454d50ULL, uint64_t(k * c + ch));
        const double fx = 0.1 + 0.5 * unit_double(splitmix64(s + 1));
        const double fy = 0.1 + 0.5 * unit_double(splitmix64(s + 2));
        const double phase = 6.283185307179586 * unit_double(splitmix64(s + 3));
        const double offset = 2.0 * unit_double(splitmix64(s + 4)) - 1.0;
        for (int64_t y = 0; y < h; ++y)
          for (int64_t x = 0; x < w; ++x)
            templates_[size_t((k * c + ch) * h * w + y * w + x)] =
                float(offset + std::sin(fx * x + fy * y + phase));
      }
  }
  int64_t size() const override { return size_; }
  Batch get(const std::vector<int64_t>& indices) const override {
    check_indices(indices, size_);
    const int64_t n = static_cast<int64_t>(indices.size());
    std::vector<int64_t> dims{n};
    dims.insert(dims.end(), shape_.begin(), shape_.end());
    Batch b{torch::empty(dims, torch::kFloat), torch::empty({n}, torch::kLong)};
    float* x = b.inputs.data_ptr<float>();
    int64_t* y = b.labels.data_ptr<int64_t>();
    for (int64_t k = 0; k < n; ++k) {
      const uint64_t s = mix_seed(seed_, 0x53414d50ULL, uint64_t(indices[k]));
      const int64_t label = int64_t(below(splitmix64(s), uint64_t(classes_)));
      y[k] = label;
      const float* t = templates_.data() + label * per_sample_;
      for (int64_t j = 0; j < per_sample_; ++j)
        x[k * per_sample_ + j] =
            t[j] + 0.5f * float(gaussian(splitmix64(s + 2 * j + 1), splitmix64(s + 2 * j + 2)));
    }
    return b;
  }

 private:
  uint64_t seed_;
  int64_t size_;
  std::vector<int64_t> shape_;
  int64_t classes_, per_sample_ = 0;
  std::vector<float> templates_;
};

// Token sequences: position 0 is a [CLS]-like token (101); every other
// token is, with probability 1/4, one of 50 keywords of the label (ids
// 1000 + 50 label + [0, 50)), else uniform over [1000, vocab). A
// bag-of-words signal a Transformer learns in a few hundred samples.
class SyntheticTokens : public Dataset {
 public:
  SyntheticTokens(uint64_t seed, int64_t size, int64_t seq, int64_t vocab, int64_t classes)
      : seed_(seed), size_(size), seq_(seq), vocab_(vocab), classes_(classes) {}
  int64_t size() const override { return size_; }
  Batch get(const std::vector<int64_t>& indices) const override {
    check_indices(indices, size_);
    const int64_t n = static_cast<int64_t>(indices.size());
    Batch b{torch::empty({n, seq_}, torch::kLong), torch::empty({n}, torch::kLong)};
    int64_t* x = b.inputs.data_ptr<int64_t>();
    int64_t* y = b.labels.data_ptr<int64_t>();
    const uint64_t first = 1000, keywords = 50;
    for (int64_t k = 0; k < n; ++k) {
      const uint64_t s = mix_seed(seed_, 0x544f4bULL, uint64_t(indices[k]));
      const int64_t label = int64_t(below(splitmix64(s), uint64_t(classes_)));
      y[k] = label;
      x[k * seq_] = 101;
      for (int64_t j = 1; j < seq_; ++j) {
        const uint64_t r = splitmix64(s + uint64_t(j));
        const bool signal = (r & 3) == 0;
        x[k * seq_ + j] = int64_t(signal ? first + uint64_t(label) * keywords + below(r, keywords)
                                         : first + below(r, uint64_t(vocab_) - first));
      }
    }
    return b;
  }

 private:
  uint64_t seed_;
  int64_t size_, seq_, vocab_, classes_;
};

}  // namespace

std::unique_ptr<Dataset> open_dataset(const std::string& model, Split split, const std::string& data_dir) {
  return open_dataset(find_model(model), split, data_dir);
}

std::unique_ptr<Dataset> open_dataset(const ModelSpec& spec, Split split, const std::string& data_dir) {
  const bool train = split == Split::train;
  if (spec.dataset == "fashion-mnist")
    return std::make_unique<FashionMnist>(data_dir.empty() ? kDefaultFmnistDir : data_dir, split);
  // Fixed seeds: the synthetic sets are the same in every run and process.
  if (spec.dataset == "synthetic-images")
    return std::make_unique<SyntheticImages>(0x1111, train ? 0x1112 : 0x2222, train ? 50000 : 10000,
                                             spec.sample_shape, spec.num_classes);
  if (is_tensor_data_key(spec.dataset)) return open_tensor_data(spec.dataset, split);
  if (spec.dataset == "synthetic-tokens")
    return std::make_unique<SyntheticTokens>(train ? 0x3333 : 0x4444, train ? 50000 : 1000,
                                             spec.sample_shape[0], spec.vocab_size, spec.num_classes);
  throw std::logic_error("model '" + spec.name + "' names an unknown data set '" + spec.dataset + "'");
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  if (n < 0) throw std::invalid_argument("epoch_order: negative size");
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  // Fisher-Yates on raw mt19937_64 output (its sequence is fixed by the
  // standard; std:: distributions are not, so none is used).
  std::mt19937_64 rng(mix_seed(seed, 0x45504f4348ULL, uint64_t(epoch)));
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = int64_t(rng() % uint64_t(i + 1));
    std::swap(order[size_t(i)], order[size_t(j)]);
  }
  return order;
}

int64_t rounds_per_epoch(int64_t n, int64_t batch) {
  if (batch <= 0) throw std::invalid_argument("batch size must be positive");
  return n / batch;
}

std::vector<int64_t> round_indices(int64_t n, int64_t batch, uint64_t seed, int64_t round) {
  const int64_t per_epoch = rounds_per_epoch(n, batch);
  if (per_epoch == 0)
    throw std::invalid_argument("batch of " + std::to_string(batch) + " is larger than the " +
                                std::to_string(n) + " samples of the data set");
  if (round < 0) throw std::invalid_argument("negative round");
  // Every micro-batch of every round asks for its round's samples: the
  // epoch's permutation is kept (per thread) rather than shuffled again,
  // which was 17 % of a first stage's CPU on fmnist-cnn (perf).
  struct Cached {
    int64_t n = -1, epoch = -1;
    uint64_t seed = 0;
    std::vector<int64_t> order;
  };
  thread_local Cached cached;
  const int64_t epoch = round / per_epoch;
  if (cached.n != n || cached.seed != seed || cached.epoch != epoch) {
    cached.order = epoch_order(n, seed, epoch);
    cached.n = n;
    cached.seed = seed;
    cached.epoch = epoch;
  }
  const std::vector<int64_t>& order = cached.order;
  const int64_t start = (round % per_epoch) * batch;
  return std::vector<int64_t>(order.begin() + start, order.begin() + start + batch);
}

}  // namespace asteroid::compute
