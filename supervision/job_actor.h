// The job actor: the top of one training job's supervision tree, the
// handle by which anyone asks a running job how it is doing or stops it.
//
//   job actor (event-based, typed: job_actor; answers at once)
//     job driver (event-based: the fiber host of the job's body, which
//                 drives the JobSupervisor, job_supervisor.h, and its
//                 round coordinator, whose mailbox is the driver's;
//                 actors/fiber_host.h)
//       heartbeat monitor, planner, stage actors
//
// The driver publishes the job's status (JobSupervisor::status: round,
// loss, plan, device health, phase) whenever it changes; the job actor
// answers status requests from the newest, so a request is answered at
// once whatever the driver is doing: running a round, recovering from a
// failure, writing a checkpoint. A stop request is passed to the driver,
// which ends the job at its next round boundary. The job ends when the
// driver's body returns or throws; run_job waits for it.
#pragma once

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <atomic>
#include <exception>
#include <functional>
#include <memory>
#include <string>

#include "actors/atoms.h"
#include "actors/coordinator.h"
#include "actors/mailbox.h"

namespace asteroid::supervision {

using job_actor = caf::typed_actor<caf::replies_to<actors::status_atom>::with<std::string>,  // the newest status
                                   caf::reacts_to<actors::stop_atom>,                       // end at a boundary
                                   caf::reacts_to<actors::update_atom, std::string>>;       // from the driver

// The job was asked to stop (a stop request to its job actor) and did, at
// a round boundary.
struct JobStopped : actors::JobError {
  using actors::JobError::JobError;
};

// What the job's body gets: its way to publish the status and to learn
// that a stop was asked for.
class JobDriver {
 public:
  struct Shared;  // between the job actor and its driver
  JobDriver(std::shared_ptr<Shared> shared, actors::Mailbox& mailbox)
      : shared_(std::move(shared)), mailbox_(&mailbox) {}
  // The job actor answers status requests with `status_json` from now on.
  void publish(std::string status_json);
  // True once a stop request reached the job actor.
  bool stop_requested() const;
  const job_actor& job() const;
  // The driver's mailbox: the job's round coordinator reads it
  // (Coordinator's constructor), so waiting for a round holds no thread.
  actors::Mailbox& mailbox() const { return *mailbox_; }

 private:
  std::shared_ptr<Shared> shared_;
  actors::Mailbox* mailbox_;
};

// Runs `body` as the driver of a new job actor and waits for the job's end;
// rethrows what the body threw. `started`, if given, gets the job actor
// before the body starts (to hand it to whoever will ask for status).
void run_job(caf::actor_system& system, const std::function<void(JobDriver&)>& body,
             const std::function<void(const job_actor&)>& started = {});

}  // namespace asteroid::supervision
