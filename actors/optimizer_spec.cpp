#include "actors/optimizer_spec.h"

namespace asteroid::actors {

compute::OptimizerConfig to_config(const messages::OptimizerSpec& spec) {
  compute::OptimizerConfig c;
  c.kind = static_cast<compute::OptimizerKind>(spec.kind);
  c.lr = spec.lr;
  c.momentum = spec.momentum;
  c.beta1 = spec.beta1;
  c.beta2 = spec.beta2;
  c.eps = spec.eps;
  c.weight_decay = spec.weight_decay;
  return c;
}

messages::OptimizerSpec to_spec(const compute::OptimizerConfig& c) {
  messages::OptimizerSpec s;
  s.kind = static_cast<messages::OptimizerKind>(c.kind);
  s.lr = c.lr;
  s.momentum = c.momentum;
  s.beta1 = c.beta1;
  s.beta2 = c.beta2;
  s.eps = c.eps;
  s.weight_decay = c.weight_decay;
  return s;
}

nlohmann::json to_json(const messages::OptimizerSpec& s) {
  return {{"kind", static_cast<int>(s.kind)}, {"lr", s.lr},       {"momentum", s.momentum},
          {"beta1", s.beta1},                 {"beta2", s.beta2}, {"eps", s.eps},
          {"weight_decay", s.weight_decay}};
}

messages::OptimizerSpec optimizer_from_json(const nlohmann::json& j) {
  messages::OptimizerSpec s;
  s.kind = static_cast<messages::OptimizerKind>(j.at("kind").get<int>());
  s.lr = j.at("lr").get<double>();
  s.momentum = j.at("momentum").get<double>();
  s.beta1 = j.at("beta1").get<double>();
  s.beta2 = j.at("beta2").get<double>();
  s.eps = j.at("eps").get<double>();
  s.weight_decay = j.at("weight_decay").get<double>();
  return s;
}

}  // namespace asteroid::actors
