// CAF atoms of messages that stay inside one process (between the heartbeat
// monitor and the coordinator). Everything that crosses a process boundary is
// an envelope (messages/asteroid.capnp), never an atom.
#pragma once

#include <caf/atom.hpp>

namespace asteroid::actors {

// (lost_atom, device id): a device stopped answering.
using lost_atom = caf::atom_constant<caf::atom("lost")>;
// (back_atom, device id): a lost device answers again.
using back_atom = caf::atom_constant<caf::atom("back")>;
// (peers_atom, device id, std::vector<std::string>): the pipeline peers the
// device cannot reach now (sent when it changes; actors/partitions.h).
using peers_atom = caf::atom_constant<caf::atom("peers")>;
// (status_atom) -> std::string: the running job's status as JSON
// (Coordinator::status, JobSupervisor::status), answered while rounds run.
using status_atom = caf::atom_constant<caf::atom("status")>;
// (stop_atom): the job actor (supervision/job_actor.h) is asked to end the
// job at the next round boundary.
using stop_atom = caf::atom_constant<caf::atom("stop")>;
// (update_atom, std::string): the job's driver tells the job actor its
// newest status.
using update_atom = caf::atom_constant<caf::atom("update")>;
// (ask_reply_atom, uint64_t ticket, WireMessage | caf::error): the answer of
// a request made through actors::ask (actors/ask.h) to its asker.
using ask_reply_atom = caf::atom_constant<caf::atom("askreply")>;
// (manager_reply_atom, uint64_t ticket, caf::message | caf::error): the
// connection manager's answer to a connect or remote spawn, handed to its
// asker (actors/transport.h).
using manager_reply_atom = caf::atom_constant<caf::atom("mgrreply")>;
// (supervise_atom, stage actor, its coordinator, stage, member): a stage
// actor, once assigned, puts itself under its node's watch (actors/node.h).
using supervise_atom = caf::atom_constant<caf::atom("supervise")>;
// Internal tick of the heartbeat monitor.
using tick_atom = caf::atom_constant<caf::atom("tick")>;
// (wake_atom, uint64_t ticket): a fiber host's deadline or start
// (actors/fiber_host.h).
using wake_atom = caf::atom_constant<caf::atom("wake")>;
// (heartbeat_reply_atom, node id, sequence, arrival as steady_clock ticks,
// unreachable peers, MAC): a heartbeat datagram's reply, from the pinger's
// thread to the heartbeat monitor.
using heartbeat_reply_atom = caf::atom_constant<caf::atom("hbreply")>;

}  // namespace asteroid::actors
