// One member of one pipeline stage: a blocking CAF actor (so CAF runs it on
// a thread of its own and its compute never starves the node's I/O),
// spawned on a node by the coordinator with CAF remote spawn ("stage").
//
// Protocol (every payload is an envelope, see messages/asteroid.capnp):
//  - deploy: request (WireMessage{assignment}, prev group, own group, next
//    group as CAF handles in member order) -> WireMessage{nodeInfo} when the
//    stage is built, or WireMessage{error} (unknown model, memory budget
//    exceeded, ...), after which the actor exits and the node goes on.
//  - control start(r): the first stage starts pulling micro-batches of round
//    r from its data source as its 1F1B window allows.
//  - activation / gradient slices: forward and backward inputs; the window
//    (planner/schedule.h) decides what runs next.
//  - reduceChunk: the group's ring all-reduce after the M-th backward; then
//    the member steps its optimizer and sends done(r) and its metrics to the
//    coordinator.
//  - control commit(r): keep this round's state as the one to roll back to.
//  - control abort(r): drop the round in flight, roll back to the last commit.
//  - stateRequest: reply with the last committed StageState.
// The member monitors the coordinator and exits when it goes down.
#pragma once

#include <caf/fwd.hpp>

#include <memory>

namespace asteroid::actors {

struct NodeContext;

void stage_actor(caf::blocking_actor* self, std::shared_ptr<NodeContext> node);

}  // namespace asteroid::actors
