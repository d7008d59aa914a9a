// TorchScript models as layer chains (docs/custom-models.md). A module saved
// with torch.jit.save is a model when its forward is a chain of its
// children: it takes one tensor, calls each child once, in a line (each
// child's output is the next one's only input) and returns the last one's
// output, with nothing else computed, no parameters of its own and no
// buffers (state outside the parameters is neither replicated nor
// checkpointed). An nn.Sequential is one; so is any module written that way.
// Its children are the layers the profiler measures, the planner cuts
// between and the stages run, starting from the weights in the file.
//
// A model is registered in this process (compute/model_zoo.h) under
// "<file stem>@<first 12 hex digits of the file's SHA-256>", with the data
// fields of what it trains on (compute/tensor_dataset.h); a node that
// receives the bytes registers the same name after checking the hash.
// Errors name the file or the child.
#pragma once

#include <string>
#include <vector>

#include "compute/model_zoo.h"
#include "compute/tensor_dataset.h"

namespace asteroid::compute {

struct NamedLayer;

struct ScriptedModel {
  ModelSpec spec;      // name, layers (the children's names), data fields
  std::string sha256;  // of `bytes`, lower-case hex
  std::string bytes;   // the file
  std::string path;    // where it was read (empty when received)
};

// Reads `path`, checks it is a chain, runs two samples of `data` through it
// (each child's output must be a tensor, the last one's [n, classes] with
// classes >= data.num_classes) and registers it. Returns the registered
// model. Throws std::invalid_argument naming the file or the child.
const ScriptedModel& register_scripted_file(const std::string& path, const DataShape& data);

// What a node does with a model it receives: checks that `bytes` hash to
// `sha256` and that they hold the chain `spec` lists, then registers `spec`.
const ScriptedModel& register_scripted_bytes(const ModelSpec& spec, const std::string& sha256, std::string bytes);

// A checkpoint's model again (a resumed job): registers the file at `path`
// with the data `dataset` names (a key of compute/tensor_dataset.h) and
// throws unless it is model `name` (the file changed since).
void register_saved_model(const std::string& name, const std::string& path, const std::string& dataset);

// The registered TorchScript model of that name, or nullptr.
const ScriptedModel* find_scripted(const std::string& name);

// Layers [begin, end) of a registered model, loaded afresh from its bytes
// (each call has parameters of its own, equal to the file's).
std::vector<NamedLayer> build_scripted_layers(const ScriptedModel& model, int begin, int end);

std::string sha256_hex(const std::string& bytes);

// The model a command line names: a zoo model's name, or the path of a
// TorchScript file, registered here with what it trains on (`data` and
// `test_data`: tensor files, compute/tensor_dataset.h; both empty:
// Fashion-MNIST). Returns the model's name. Data files with a zoo model, or
// a test file without a training file, are an error.
std::string resolve_model(const std::string& model, const std::string& data = "", const std::string& test_data = "");

}  // namespace asteroid::compute
