#include "actors/model_shipping.h"

#include <caf/all.hpp>

#include <algorithm>
#include <stdexcept>

#include "actors/ask.h"
#include "compute/torchscript_model.h"

namespace asteroid::actors {

messages::ModelFile model_file_of(const std::string& name) {
  const compute::ScriptedModel* model = compute::find_scripted(name);
  if (!model) throw std::logic_error("model '" + name + "' is not a registered TorchScript model");
  const compute::ModelSpec& spec = model->spec;
  messages::ModelFile file;
  file.name = spec.name;
  file.sha256 = model->sha256;
  file.bytes.assign(model->bytes.begin(), model->bytes.end());
  file.layer_names = spec.layer_names;
  file.tokens = spec.input == compute::InputKind::tokens;
  file.sample_shape = spec.sample_shape;
  file.num_classes = spec.num_classes;
  file.dataset = spec.dataset;
  return file;
}

void take_model_file(const messages::ModelFile& file) {
  compute::ModelSpec spec;
  spec.name = file.name;
  spec.description = "TorchScript chain of " + std::to_string(file.layer_names.size()) + " children (received)";
  spec.input = file.tokens ? compute::InputKind::tokens : compute::InputKind::image;
  spec.sample_shape = file.sample_shape;
  spec.num_classes = file.num_classes;
  spec.dataset = file.dataset;
  spec.layer_names = file.layer_names;
  compute::register_scripted_bytes(spec, file.sha256, std::string(file.bytes.begin(), file.bytes.end()));
}

bool ship_model(Mailbox& self, const caf::actor& node, const messages::NodeInfo& info,
                const std::string& model, std::chrono::milliseconds timeout, std::string& failure) {
  if (!compute::find_scripted(model)) return true;
  if (std::find(info.models.begin(), info.models.end(), model) != info.models.end()) return true;
  const auto reply = ask(self, node, model_file_of(model), timeout, failure);
  if (!reply) return false;
  const auto* now = std::get_if<messages::NodeInfo>(&*reply);
  if (!now || std::find(now->models.begin(), now->models.end(), model) == now->models.end()) {
    failure = std::string("it answered the model with ") + messages::kind_name(*reply) + " not listing it";
    return false;
  }
  return true;
}

}  // namespace asteroid::actors
