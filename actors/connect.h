// Reaching a node: the node actor published at a host and port, and its CAF
// node id (what remote spawn needs), within a deadline. Never CAF's
// unbounded remote_actor (CAF_NOTES.md section 2): every connection across
// processes is made here.
#pragma once

#include <caf/fwd.hpp>
#include <caf/actor.hpp>
#include <caf/node_id.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "actors/mailbox.h"
#include "actors/transport.h"
#include "planner/types.h"

namespace asteroid::actors {

// The node of `device` (published at its host and port; with TLS through
// a route that checks the device's certificate, actors/transport.h), or
// nullopt with `failure` saying why (CAF's error, a TLS refusal, a timeout,
// or nothing published there). A connect CAF drops before the node's first
// message (retry_connect, actors/transport.h) is tried again, up to three
// times within the timeout.
// Waits in `self`'s mailbox (actors/transport.h).
std::optional<NodeHandle> connect_node(Mailbox& self, const planner::Device& device, std::chrono::milliseconds timeout,
                                       std::string& failure);

}  // namespace asteroid::actors
