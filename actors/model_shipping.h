// TorchScript models travel to the nodes that need them (issue: your own
// model): before a node profiles a model or hosts a stage of it, whoever
// connects to the node makes sure it has the model: a zoo model it always
// has; a registered TorchScript model (compute/torchscript_model.h) is sent
// as a modelFile when the node's nodeInfo does not list it, and the node
// checks the hash and the chain before it registers the model.
#pragma once

#include <caf/fwd.hpp>

#include <chrono>
#include <string>

#include "actors/mailbox.h"
#include "messages/envelope.h"

namespace asteroid::actors {

// The message that carries registered model `name`. REQUIRES: it is registered.
messages::ModelFile model_file_of(const std::string& name);

// What a node does with one: checks and registers it. Throws
// std::invalid_argument naming what is wrong.
void take_model_file(const messages::ModelFile& file);

// Sends `model` to the node unless `info` (its answer to hello) lists it or
// it is no TorchScript model. False with `failure` set when the node did
// not take it within `timeout`.
bool ship_model(Mailbox& self, const caf::actor& node, const messages::NodeInfo& info,
                const std::string& model, std::chrono::milliseconds timeout, std::string& failure);

}  // namespace asteroid::actors
