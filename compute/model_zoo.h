// The model zoo as plain data: every model's name, sample shape, layer names
// and the data set it trains on. No Torch: the planner, the CLI and the
// actors validate names and layer ranges with this header alone (link
// asteroid_compute_lite). The Torch modules behind each name live in
// compute/layers.cpp and are checked against this table by the tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace asteroid::compute {

enum class InputKind { image, tokens };  // float32 images or int64 token ids

struct ModelSpec {
  std::string name;         // e.g. "fmnist-cnn"
  std::string description;  // one line
  InputKind input = InputKind::image;
  std::vector<int64_t> sample_shape;  // one sample, e.g. {1, 28, 28} or {128}
  int64_t num_classes = 10;
  int64_t vocab_size = 0;     // token models only
  std::string dataset;        // "fashion-mnist" | "synthetic-images" | "synthetic-tokens"
  std::vector<std::string> layer_names;  // the chain, in order

  int layer_count() const { return static_cast<int>(layer_names.size()); }
};

// Every model compiled in, in a fixed order.
const std::vector<ModelSpec>& model_zoo();

// Models loaded at run time (TorchScript files, compute/torchscript_model.h)
// join the zoo in this process: find_model, is_known_model and layer_count
// find them by name. Registering a name again replaces its spec. Thread-safe;
// a spec found stays valid for the life of the process.
void register_model(const ModelSpec& spec);
// The zoo's names, then those registered in this process (by name).
std::vector<std::string> model_names();
// "fmnist-cnn, fmnist-resnet, ..." for error messages (the compiled-in zoo).
std::string known_models_text();
bool is_known_model(const std::string& name);

// The model's spec; throws std::invalid_argument naming the model and
// listing the known ones when `name` is not in the zoo.
const ModelSpec& find_model(const std::string& name);
// Layer count of a known model (throws like find_model).
int layer_count(const std::string& name);

// Throws std::invalid_argument unless 0 <= begin < end <= layer count.
void check_layer_range(const std::string& name, int begin, int end);

}  // namespace asteroid::compute
