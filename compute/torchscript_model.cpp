#include "compute/torchscript_model.h"

#include <openssl/evp.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "compute/layers.h"

namespace asteroid::compute {
namespace {

// One child of a chain, its parameters registered as the layer's own (the
// same tensors: the optimizer's updates are the module's).
class ScriptedLayer : public Layer {
 public:
  ScriptedLayer(torch::jit::Module module, std::string name) : module_(std::move(module)), name_(std::move(name)) {
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
      std::string key = p.name;
      std::replace(key.begin(), key.end(), '.', '_');
      register_parameter(key, p.value, p.value.requires_grad());
    }
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    const c10::IValue out = module_.forward({x});
    if (!out.isTensor())
      throw std::invalid_argument("child '" + name_ + "' returned a " + out.tagKind() + ", not a tensor");
    return out.toTensor();
  }
  void train(bool on) override {
    torch::nn::Module::train(on);
    module_.train(on);
  }

 private:
  torch::jit::Module module_;
  std::string name_;
};

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

torch::jit::Module load_module(const std::string& bytes, const std::string& origin) {
  std::istringstream in(bytes);
  try {
    return torch::jit::load(in);
  } catch (const std::exception& e) {
    throw std::invalid_argument("model file '" + origin + "' does not load as TorchScript: " + first_line(e.what()));
  }
}

// The children's names in the order forward calls them; throws unless
// forward is a chain of them (see the header).
std::vector<std::string> chain_of(const torch::jit::Module& module, const std::string& origin) {
  const std::string where = "model file '" + origin + "'";
  auto fail = [&](const std::string& why) -> std::invalid_argument {
    return std::invalid_argument(where + " is not a chain of its children: " + why +
                                 " (docs/custom-models.md says what a chain is)");
  };
  if (!module.find_method("forward")) throw fail("it has no forward method");
  for (const auto& p : module.named_parameters(/*recurse=*/false))
    throw fail("it has a parameter of its own ('" + p.name + "'); a chain's parameters live in its children");
  for (const auto& b : module.named_buffers(/*recurse=*/true))
    throw std::invalid_argument(where + " has the buffer '" + b.name +
                                "': state outside the parameters (a BatchNorm's running statistics) is neither "
                                "replicated nor checkpointed, so it is not supported; use GroupNorm or LayerNorm");
  const auto graph = module.get_method("forward").graph();
  if (graph->inputs().size() != 2)
    throw fail("its forward takes " + std::to_string(graph->inputs().size() - 1) + " arguments, not one tensor");
  torch::jit::Value* self = graph->inputs()[0];
  torch::jit::Value* current = graph->inputs()[1];
  std::map<const torch::jit::Value*, std::string> child_of;  // the values GetAttr made
  std::vector<std::string> order;
  for (torch::jit::Node* node : graph->nodes()) {
    const auto kind = node->kind();
    if (kind == c10::prim::Constant) continue;
    if (kind == c10::prim::GetAttr && node->input() == self) {
      const auto type = node->output()->type()->cast<c10::ClassType>();
      if (!type || !type->is_module()) throw fail("its forward reads the attribute '" + node->s(c10::attr::name) + "'");
      child_of[node->output()] = node->s(c10::attr::name);
      continue;
    }
    if (kind == c10::prim::CallMethod && node->s(c10::attr::name) == "forward" && node->inputs().size() == 2 &&
        child_of.count(node->inputs()[0])) {
      const std::string& child = child_of[node->inputs()[0]];
      if (node->inputs()[1] != current)
        throw fail("child '" + child + "' does not take the output of " +
                   (order.empty() ? std::string("the input") : "child '" + order.back() + "'"));
      if (std::find(order.begin(), order.end(), child) != order.end()) throw fail("child '" + child + "' is called twice");
      if (!node->output()->type()->isSubtypeOf(*c10::TensorType::get()))
        throw std::invalid_argument(where + ": child '" + child + "' returns " + node->output()->type()->str() +
                                    ", not a tensor");
      order.push_back(child);
      current = node->output();
      continue;
    }
    throw fail("its forward computes " + std::string(kind.toQualString()) +
               (order.empty() ? std::string() : " after child '" + order.back() + "'"));
  }
  if (graph->outputs().size() != 1 || graph->outputs()[0] != current)
    throw fail("its forward does not return the last child's output");
  for (const auto& child : module.named_children())
    if (std::find(order.begin(), order.end(), child.name) == order.end())
      throw fail("its forward never calls child '" + child.name + "'");
  if (order.empty()) throw fail("it has no children");
  return order;
}

std::string shape_text(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << sizes;
  return out.str();
}

// Runs the first two training samples through the children one by one.
void probe(const torch::jit::Module& module, const std::vector<std::string>& order, const DataShape& data,
           const std::string& origin) {
  ModelSpec shape;
  shape.sample_shape = data.sample_shape;
  shape.num_classes = data.num_classes;
  shape.dataset = data.dataset;
  const auto open = open_dataset(shape, Split::train);
  torch::NoGradGuard no_grad;
  const Batch batch = open->get({0, std::min<int64_t>(1, open->size() - 1)});
  at::Tensor x = batch.inputs;
  for (size_t i = 0; i < order.size(); ++i) {
    const std::string input_text = i == 0 ? "samples of shape " + shape_text(x.sizes())
                                          : "the output of child '" + order[i - 1] + "' (" + shape_text(x.sizes()) + ")";
    c10::IValue out;
    try {
      out = module.attr(order[i]).toModule().forward({x});
    } catch (const std::exception& e) {
      throw std::invalid_argument("model file '" + origin + "': child '" + order[i] + "' fails on " + input_text +
                                  ": " + first_line(e.what()));
    }
    if (!out.isTensor())
      throw std::invalid_argument("model file '" + origin + "': child '" + order[i] + "' returned a " + out.tagKind() +
                                  ", not a tensor");
    x = out.toTensor();
  }
  if (x.dim() != 2 || x.size(0) != batch.inputs.size(0) || x.size(1) < data.num_classes)
    throw std::invalid_argument("model file '" + origin + "': the last child's output has shape " +
                                shape_text(x.sizes()) + " for " + std::to_string(batch.inputs.size(0)) +
                                " samples; the data have " + std::to_string(data.num_classes) +
                                " classes, so it must be [n, " + std::to_string(data.num_classes) + " or more]");
}

std::mutex registry_mutex;
std::map<std::string, std::unique_ptr<ScriptedModel>>& registry() {
  static std::map<std::string, std::unique_ptr<ScriptedModel>> models;
  return models;
}

const ScriptedModel& keep(ScriptedModel model) {
  register_model(model.spec);
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto& slot = registry()[model.spec.name];
  if (!slot || slot->sha256 != model.sha256 || slot->spec.dataset != model.spec.dataset)
    slot = std::make_unique<ScriptedModel>(std::move(model));
  return *slot;
}

}  // namespace

std::string sha256_hex(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("SHA-256 failed (OpenSSL)");
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

const ScriptedModel& register_scripted_file(const std::string& path, const DataShape& data) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::invalid_argument("model file '" + path + "' cannot be read");
  ScriptedModel model;
  model.bytes.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  model.sha256 = sha256_hex(model.bytes);
  const torch::jit::Module module = load_module(model.bytes, path);
  const auto order = chain_of(module, path);
  probe(module, order, data, path);
  ModelSpec& spec = model.spec;
  spec.name = std::filesystem::path(path).stem().string() + "@" + model.sha256.substr(0, 12);
  spec.description = "TorchScript chain of " + std::to_string(order.size()) + " children from " + path;
  spec.input = data.input;
  spec.sample_shape = data.sample_shape;
  spec.num_classes = data.num_classes;
  spec.dataset = data.dataset;
  spec.layer_names = order;
  model.path = path;
  return keep(std::move(model));
}

void register_saved_model(const std::string& name, const std::string& path, const std::string& dataset) {
  const std::string registered = register_scripted_file(path, describe_data(dataset)).spec.name;
  if (registered != name)
    throw std::invalid_argument("model file '" + path + "' is model " + registered + " now, not " + name +
                                " as when the checkpoint was written");
}

const ScriptedModel& register_scripted_bytes(const ModelSpec& spec, const std::string& sha256, std::string bytes) {
  const std::string origin = spec.name + " (as received)";
  if (sha256_hex(bytes) != sha256)
    throw std::invalid_argument("model " + origin + ": its bytes do not hash to " + sha256);
  if (spec.name.size() < 13 || spec.name.compare(spec.name.size() - 12, 12, sha256.substr(0, 12)) != 0)
    throw std::invalid_argument("model " + origin + ": the name does not end in its hash's first 12 digits");
  const auto order = chain_of(load_module(bytes, origin), origin);
  if (order != spec.layer_names) throw std::invalid_argument("model " + origin + ": its chain is not the one named");
  return keep({spec, sha256, std::move(bytes), ""});
}

const ScriptedModel* find_scripted(const std::string& name) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto found = registry().find(name);
  return found == registry().end() ? nullptr : found->second.get();
}

std::vector<NamedLayer> build_scripted_layers(const ScriptedModel& model, int begin, int end) {
  const torch::jit::Module module = load_module(model.bytes, model.spec.name);
  std::vector<NamedLayer> layers;
  for (int i = begin; i < end; ++i) {
    const std::string& name = model.spec.layer_names[static_cast<size_t>(i)];
    layers.push_back({name, std::make_shared<ScriptedLayer>(module.attr(name).toModule(), name)});
  }
  return layers;
}

std::string resolve_model(const std::string& model, const std::string& data, const std::string& test_data) {
  if (!test_data.empty() && data.empty()) throw std::invalid_argument("--test-data needs --data (the training file)");
  if (is_known_model(model)) {  // a zoo name, or a model registered already
    if (!data.empty() && !find_scripted(model))
      throw std::invalid_argument("--data trains a TorchScript model; zoo model '" + model + "' has its own data set");
    return model;
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(model, ec)) {
    if (model.size() > 3 && model.compare(model.size() - 3, 3, ".pt") == 0)
      throw std::invalid_argument("model file '" + model + "' does not exist");
    find_model(model);  // throws: unknown model, listing the known ones
  }
  return register_scripted_file(model, data.empty() ? fashion_mnist_shape() : describe_tensor_data(data, test_data))
      .spec.name;
}

}  // namespace asteroid::compute
