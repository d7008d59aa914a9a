// The job actor (supervision/job_actor.h): it answers status requests from
// what its driver last published, whatever the driver is doing; a stop
// request reaches the driver; the job ends with its driver and whoever
// waits gets what the driver threw.
#include "supervision/job_actor.h"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include "actors/system_config.h"

namespace asteroid::supervision {
namespace {

using namespace std::chrono_literals;

std::string ask_status(caf::actor_system& system, const job_actor& job) {
  caf::scoped_actor self{system};
  std::string answer;
  self->request(job, 10s, actors::status_atom::value)
      .receive([&](const std::string& status) { answer = status; },
               [&](caf::error& e) { answer = "error: " + system.render(e); });
  return answer;
}

TEST(JobActor, AnswersWhileItsDriverIsBlocked) {
  actors::AsteroidConfig config;
  caf::actor_system system(config);
  std::promise<job_actor> started;
  std::promise<void> published, release;
  std::string answer;
  std::thread asker([&] {
    const job_actor job = started.get_future().get();
    published.get_future().wait();
    answer = ask_status(system, job);
    release.set_value();
  });
  run_job(
      system,
      [&](JobDriver& driver) {
        driver.publish(R"({"phase":"recovering"})");
        published.set_value();
        // Blocked, as in a recovery that waits for a device: only the job
        // actor can answer meanwhile.
        ASSERT_EQ(release.get_future().wait_for(60s), std::future_status::ready);
      },
      [&](const job_actor& job) { started.set_value(job); });
  asker.join();
  EXPECT_EQ(answer, R"({"phase":"recovering"})");
}

TEST(JobActor, RethrowsWhatItsDriverThrew) {
  actors::AsteroidConfig config;
  caf::actor_system system(config);
  try {
    run_job(system, [](JobDriver&) { throw actors::DeviceLost("d1", "device 'd1' went down"); });
    FAIL() << "nothing was thrown";
  } catch (const actors::DeviceLost& e) {
    EXPECT_EQ(e.device, "d1");
    EXPECT_STREQ(e.what(), "device 'd1' went down");
  }
}

TEST(JobActor, AStopRequestReachesTheDriver) {
  actors::AsteroidConfig config;
  caf::actor_system system(config);
  bool stopped = false;
  run_job(
      system,
      [&](JobDriver& driver) {
        const auto deadline = std::chrono::steady_clock::now() + 60s;
        while (!driver.stop_requested() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
        stopped = driver.stop_requested();
      },
      [](const job_actor& job) { caf::anon_send(job, actors::stop_atom::value); });
  EXPECT_TRUE(stopped);
}

}  // namespace
}  // namespace asteroid::supervision
