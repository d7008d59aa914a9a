#include "compute/tensor_dataset.h"

#include <torch/serialize.h>
#include <torch/torch.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>

namespace asteroid::compute {
namespace {

const std::string kKeyPrefix = "tensors:";

std::string shape_text(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << sizes;
  return out.str();
}

struct Tensors {
  at::Tensor inputs, labels;
};

// The (inputs, labels) of one file, checked on their own.
Tensors read_tensors(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::invalid_argument("data file '" + path + "' cannot be read");
  const std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  c10::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw std::invalid_argument("data file '" + path + "' is not a file torch.save wrote: " +
                                what.substr(0, what.find('\n')));
  }
  auto tensor = [&](const c10::IValue& v, const char* what) {
    if (!v.isTensor()) throw std::invalid_argument("data file '" + path + "': " + what + " is not a tensor");
    return v.toTensor();
  };
  Tensors t;
  if (value.isTuple() || value.isList()) {
    const auto items = value.isTuple() ? value.toTupleRef().elements().vec() : value.toListRef().vec();
    if (items.size() != 2)
      throw std::invalid_argument("data file '" + path + "' holds " + std::to_string(items.size()) +
                                  " items; a data set is a pair (inputs, labels)");
    t = {tensor(items[0], "the first item (inputs)"), tensor(items[1], "the second item (labels)")};
  } else if (value.isGenericDict()) {
    const auto dict = value.toGenericDict();
    for (const char* key : {"inputs", "labels"})
      if (!dict.contains(key))
        throw std::invalid_argument("data file '" + path + "' is a dict without the key '" + key + "'");
    t = {tensor(dict.at("inputs"), "'inputs'"), tensor(dict.at("labels"), "'labels'")};
  } else {
    throw std::invalid_argument("data file '" + path + "' holds a " + value.tagKind() +
                                "; a data set is a pair (inputs, labels) or a dict with 'inputs' and 'labels'");
  }
  const auto in_type = t.inputs.scalar_type();
  if (in_type == at::kDouble) t.inputs = t.inputs.to(at::kFloat);
  if (in_type == at::kInt) t.inputs = t.inputs.to(at::kLong);
  if (t.inputs.scalar_type() != at::kFloat && t.inputs.scalar_type() != at::kLong)
    throw std::invalid_argument("data file '" + path + "': inputs are " + std::string(c10::toString(in_type)) +
                                "; they must be float32 (images) or int64 (token ids), e.g. x.float() / 255");
  if (t.inputs.dim() < 2)
    throw std::invalid_argument("data file '" + path + "': inputs of shape " + shape_text(t.inputs.sizes()) +
                                " have no sample dimension; they must be [n, ...sample shape]");
  if (!c10::isIntegralType(t.labels.scalar_type(), /*includeBool=*/false))
    throw std::invalid_argument("data file '" + path + "': labels are " +
                                std::string(c10::toString(t.labels.scalar_type())) +
                                "; they must be integer class indices (int64)");
  t.labels = t.labels.to(at::kLong);
  if (t.labels.dim() != 1)
    throw std::invalid_argument("data file '" + path + "': labels of shape " + shape_text(t.labels.sizes()) +
                                " are not a vector");
  if (t.labels.size(0) != t.inputs.size(0))
    throw std::invalid_argument("data file '" + path + "' has " + std::to_string(t.inputs.size(0)) +
                                " inputs but " + std::to_string(t.labels.size(0)) + " labels");
  if (t.labels.size(0) == 0) throw std::invalid_argument("data file '" + path + "' has no samples");
  if (t.labels.min().item<int64_t>() < 0)
    throw std::invalid_argument("data file '" + path + "': a label is negative");
  t.inputs = t.inputs.contiguous();
  t.labels = t.labels.contiguous();
  return t;
}

struct Key {
  std::string train, test;
};

Key parse_key(const std::string& key) {
  if (!is_tensor_data_key(key)) throw std::invalid_argument("'" + key + "' does not name a tensor data set");
  const std::string rest = key.substr(kKeyPrefix.size());
  const auto bar = rest.find('|');
  return bar == std::string::npos ? Key{rest, ""} : Key{rest.substr(0, bar), rest.substr(bar + 1)};
}

// Sample i of a one-file data set is a test sample when i % 10 == 9.
at::Tensor split_indices(int64_t n, Split split) {
  std::vector<int64_t> picked;
  for (int64_t i = 0; i < n; ++i)
    if ((i % 10 == 9) == (split == Split::test)) picked.push_back(i);
  return torch::tensor(picked, torch::kLong);
}

Tensors load_split(const Key& key, Split split) {
  if (!key.test.empty()) return read_tensors(split == Split::train ? key.train : key.test);
  Tensors all = read_tensors(key.train);
  const at::Tensor picked = split_indices(all.labels.size(0), split);
  if (picked.numel() == 0)
    throw std::invalid_argument("data file '" + key.train + "' has too few samples for a " +
                                (split == Split::train ? "training" : "test") + " split (one in ten is a test sample)");
  return {all.inputs.index_select(0, picked), all.labels.index_select(0, picked)};
}

class TensorData : public Dataset {
 public:
  explicit TensorData(Tensors t) : t_(std::move(t)) {}
  int64_t size() const override { return t_.labels.size(0); }
  Batch get(const std::vector<int64_t>& indices) const override {
    for (int64_t i : indices)
      if (i < 0 || i >= size())
        throw std::out_of_range("sample index " + std::to_string(i) + " outside [0, " + std::to_string(size()) + ")");
    const at::Tensor picked = torch::tensor(indices, torch::kLong);
    return {t_.inputs.index_select(0, picked), t_.labels.index_select(0, picked)};
  }

 private:
  Tensors t_;
};

}  // namespace

DataShape fashion_mnist_shape() { return {InputKind::image, {1, 28, 28}, 10, "fashion-mnist"}; }

bool is_tensor_data_key(const std::string& dataset) { return dataset.rfind(kKeyPrefix, 0) == 0; }

DataShape describe_tensor_data(const std::string& train_path, const std::string& test_path) {
  if (train_path.find('|') != std::string::npos || test_path.find('|') != std::string::npos)
    throw std::invalid_argument("a data file's path may not contain '|'");
  const Key key{train_path, test_path};
  const Tensors train = load_split(key, Split::train), test = load_split(key, Split::test);
  const auto sample = train.inputs.sizes().slice(1).vec();
  if (test.inputs.sizes().slice(1).vec() != sample || test.inputs.scalar_type() != train.inputs.scalar_type())
    throw std::invalid_argument("test data file '" + test_path + "' has samples of shape " +
                                shape_text(test.inputs.sizes().slice(1)) + " (" +
                                c10::toString(test.inputs.scalar_type()) + "), the training file " +
                                shape_text(sample) + " (" + c10::toString(train.inputs.scalar_type()) + ")");
  DataShape shape;
  shape.input = train.inputs.scalar_type() == at::kLong ? InputKind::tokens : InputKind::image;
  shape.sample_shape = sample;
  shape.num_classes = std::max(train.labels.max().item<int64_t>(), test.labels.max().item<int64_t>()) + 1;
  shape.dataset = kKeyPrefix + train_path + (test_path.empty() ? "" : "|" + test_path);
  return shape;
}

DataShape describe_data(const std::string& dataset) {
  if (dataset == fashion_mnist_shape().dataset) return fashion_mnist_shape();
  const Key key = parse_key(dataset);
  return describe_tensor_data(key.train, key.test);
}

std::unique_ptr<Dataset> open_tensor_data(const std::string& key, Split split) {
  return std::make_unique<TensorData>(load_split(parse_key(key), split));
}

}  // namespace asteroid::compute
