// Torch modules behind the zoo's names (compute-internal: includes
// torch/torch.h, so only compute/*.cpp may include it).
//
// A model is a chain of Layers; layer i is built and initialised from
// mix_seed(seed, i) with a generator of its own, so layers [begin, end)
// built alone equal the same layers of the whole chain, and the result does
// not depend on anything else the process did (nor on other threads).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace asteroid::compute {

class Layer : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
};

struct NamedLayer {
  std::string name;
  std::shared_ptr<Layer> module;
};

// Layers [begin, end) of `model`, initialised from `seed` (a TorchScript
// model's start from its file's weights: compute/torchscript_model.h).
// Throws std::invalid_argument for an unknown model or a bad range.
std::vector<NamedLayer> build_layers(const std::string& model, int begin, int end, uint64_t seed);

}  // namespace asteroid::compute
