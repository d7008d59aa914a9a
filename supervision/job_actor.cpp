#include "supervision/job_actor.h"

#include <caf/all.hpp>

#include "actors/fiber_host.h"

namespace asteroid::supervision {

struct JobDriver::Shared {
  job_actor job;
  std::atomic<bool> stop{false};
  std::exception_ptr failure;  // what the body threw, written by the driver before it ends
};

void JobDriver::publish(std::string status_json) {
  caf::anon_send(shared_->job, actors::update_atom::value, std::move(status_json));
}

bool JobDriver::stop_requested() const { return shared_->stop.load(); }

const job_actor& JobDriver::job() const { return shared_->job; }

namespace {

// The job actor: the newest status, the stop flag, and its one child, the
// driver; it ends when the driver does.
job_actor::behavior_type job_behavior(job_actor::pointer self, std::shared_ptr<JobDriver::Shared> shared,
                                      std::function<void(JobDriver&)> body) {
  auto status = std::make_shared<std::string>(R"({"phase":"starting"})");
  shared->job = caf::actor_cast<job_actor>(self);
  auto driver = actors::spawn_fiber_host(
      self,
      [shared, body](actors::Mailbox& mailbox) {
        JobDriver handle(shared, mailbox);
        body(handle);
      },
      [shared](std::exception_ptr failure) {
        shared->failure = std::move(failure);
        shared->job = nullptr;  // the driver held the job actor alive through it
      });
  self->set_down_handler([self, driver](caf::down_msg& down) {
    if (down.source == driver.address()) self->quit(down.reason);
  });
  return {
      [status](actors::status_atom) -> std::string { return *status; },
      [shared](actors::stop_atom) { shared->stop = true; },
      [status](actors::update_atom, std::string& newest) { *status = std::move(newest); },
  };
}

}  // namespace

void run_job(caf::actor_system& system, const std::function<void(JobDriver&)>& body,
             const std::function<void(const job_actor&)>& started) {
  auto shared = std::make_shared<JobDriver::Shared>();
  caf::scoped_actor waiter{system};
  std::function<void(JobDriver&)> run = body;
  if (started) {
    // The handle is known once the job actor runs; hand it out from the
    // driver's thread, before the body.
    run = [body, started](JobDriver& driver) {
      started(driver.job());
      body(driver);
    };
  }
  auto job = system.spawn(job_behavior, shared, std::move(run));
  waiter->monitor(job);
  waiter->receive([](const caf::down_msg&) {});
  if (shared->failure) std::rethrow_exception(shared->failure);
}

}  // namespace asteroid::supervision
