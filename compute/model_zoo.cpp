#include "compute/model_zoo.h"

#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>

namespace asteroid::compute {
namespace {

std::vector<std::string> numbered(const std::string& prefix, int n) {
  std::vector<std::string> out;
  for (int i = 1; i <= n; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

std::vector<std::string> chain(std::initializer_list<std::vector<std::string>> parts) {
  std::vector<std::string> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::vector<ModelSpec> make_zoo() {
  std::vector<ModelSpec> zoo;
  zoo.push_back({"fmnist-cnn", "two 3x3 conv layers (32, 64) with max-pooling, two linear layers",
                 InputKind::image, {1, 28, 28}, 10, 0, "fashion-mnist",
                 {"conv1", "pool1", "conv2", "pool2", "fc1", "fc2"}});
  zoo.push_back({"fmnist-resnet",
                 "conv stem (32 channels), five residual blocks (32, 64, 64, 128, 128 channels, "
                 "three with stride 2), no norm layers, global average pool, linear",
                 InputKind::image, {1, 28, 28}, 10, 0, "fashion-mnist",
                 chain({{"stem"}, numbered("block", 5), {"head"}})});
  zoo.push_back({"mobilenetv2", "MobileNetV2 for 32x32 inputs (group norm), 17 inverted residual blocks",
                 InputKind::image, {3, 32, 32}, 10, 0, "synthetic-images",
                 chain({{"stem"}, numbered("block", 17), {"head", "classifier"}})});
  zoo.push_back({"resnet18", "ResNet-18 for 32x32 inputs (group norm), 8 basic blocks",
                 InputKind::image, {3, 32, 32}, 10, 0, "synthetic-images",
                 chain({{"stem"}, numbered("block", 8), {"classifier"}})});
  zoo.push_back({"efficientnet-b0", "EfficientNet-B0 for 32x32 inputs (group norm), 16 MBConv blocks",
                 InputKind::image, {3, 32, 32}, 10, 0, "synthetic-images",
                 chain({{"stem"}, numbered("block", 16), {"head", "classifier"}})});
  zoo.push_back({"bert-small",
                 "Transformer encoder: embeddings, 4 layers (hidden 512, 8 heads, ffn 2048), "
                 "sequence 128, classification head",
                 InputKind::tokens, {128}, 2, 30522, "synthetic-tokens",
                 chain({{"embeddings"}, numbered("encoder", 4), {"classifier"}})});
  return zoo;
}

std::mutex registry_mutex;
std::map<std::string, std::unique_ptr<ModelSpec>>& registry() {
  static std::map<std::string, std::unique_ptr<ModelSpec>> models;
  return models;
}

const ModelSpec* registered(const std::string& name) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto found = registry().find(name);
  return found == registry().end() ? nullptr : found->second.get();
}

}  // namespace

void register_model(const ModelSpec& spec) {
  if (spec.name.empty() || spec.layer_names.empty())
    throw std::invalid_argument("a registered model needs a name and at least one layer");
  for (const auto& m : model_zoo())
    if (m.name == spec.name) throw std::invalid_argument("model '" + spec.name + "' is already in the zoo");
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto& slot = registry()[spec.name];
  if (slot) {
    *slot = spec;  // same name: same file, so the same layers
  } else {
    slot = std::make_unique<ModelSpec>(spec);
  }
}

const std::vector<ModelSpec>& model_zoo() {
  static const std::vector<ModelSpec> zoo = make_zoo();
  return zoo;
}

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& m : model_zoo()) names.push_back(m.name);
  std::lock_guard<std::mutex> lock(registry_mutex);
  for (const auto& [name, spec] : registry()) names.push_back(name);
  return names;
}

std::string known_models_text() {
  std::string text;
  for (const auto& m : model_zoo()) text += (text.empty() ? "" : ", ") + m.name;
  return text;
}

bool is_known_model(const std::string& name) {
  for (const auto& m : model_zoo())
    if (m.name == name) return true;
  return registered(name) != nullptr;
}

const ModelSpec& find_model(const std::string& name) {
  for (const auto& m : model_zoo())
    if (m.name == name) return m;
  if (const ModelSpec* loaded = registered(name)) return *loaded;
  throw std::invalid_argument("unknown model '" + name + "' (known models: " + known_models_text() +
                              "; or the path of a TorchScript file, see docs/custom-models.md)");
}

int layer_count(const std::string& name) { return find_model(name).layer_count(); }

void check_layer_range(const std::string& name, int begin, int end) {
  const int n = layer_count(name);
  if (begin < 0 || end > n || begin >= end)
    throw std::invalid_argument("bad layer range [" + std::to_string(begin) + ", " +
                                std::to_string(end) + ") for model '" + name + "' with " +
                                std::to_string(n) + " layers");
}

}  // namespace asteroid::compute
