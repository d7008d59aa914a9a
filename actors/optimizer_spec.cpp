#include "actors/optimizer_spec.h"

#include <stdexcept>
#include <string>

namespace asteroid::actors {

nlohmann::json to_json(const messages::OptimizerSpec& s) {
  return {{"kind", static_cast<int>(s.kind)}, {"lr", s.lr},       {"momentum", s.momentum},
          {"beta1", s.beta1},                 {"beta2", s.beta2}, {"eps", s.eps},
          {"weight_decay", s.weight_decay}};
}

namespace {

// Checkpoints store the kind as its number.
OptimizerKind kind_from_json(const nlohmann::json& j) {
  const int kind = j.get<int>();
  if (kind < 0 || kind > static_cast<int>(OptimizerKind::adam)) {
    throw std::invalid_argument("optimizer kind " + std::to_string(kind) + " is not 0 (sgd), 1 (momentum) or 2 (adam)");
  }
  return static_cast<OptimizerKind>(kind);
}

}  // namespace

messages::OptimizerSpec optimizer_from_json(const nlohmann::json& j) {
  messages::OptimizerSpec s;
  s.kind = kind_from_json(j.at("kind"));
  s.lr = j.at("lr").get<double>();
  s.momentum = j.at("momentum").get<double>();
  s.beta1 = j.at("beta1").get<double>();
  s.beta2 = j.at("beta2").get<double>();
  s.eps = j.at("eps").get<double>();
  s.weight_decay = j.at("weight_decay").get<double>();
  return s;
}

}  // namespace asteroid::actors
