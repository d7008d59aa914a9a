// The mailbox of a sequential protocol: a selective receive that keeps
// what it does not take, and the fiber host that runs such a protocol as an
// event-based actor's continuation (answering status requests while it
// waits).
#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "actors/atoms.h"
#include "actors/fiber_host.h"
#include "actors/mailbox.h"

namespace asteroid::actors {
namespace {

using namespace std::chrono_literals;

// A wait may end this much before its deadline: a wake-up scheduled for an
// earlier wait of about the same deadline serves it (actors/fiber_host.cpp).
constexpr auto kSameDeadlineSlack = 2ms;

TEST(Mailbox, TakesWhatItsHandlerMatchesAndKeepsTheRestInOrder) {
  caf::actor_system_config config;
  caf::actor_system system{config};
  ScopedMailbox mailbox{system};
  caf::scoped_actor sender{system};
  for (int i : {1, 2}) sender->send(mailbox.handle(), i);
  sender->send(mailbox.handle(), std::string("text"));
  std::string text;
  caf::actor_addr from;
  caf::message_handler strings{[&](std::string& s) {
    text = s;
    from = mailbox.sender();
  }};
  ASSERT_TRUE(mailbox.receive(strings, 5s));
  EXPECT_EQ(text, "text");
  EXPECT_EQ(from, sender->address()) << "the sender of the message being handled";
  std::vector<int> ints;
  caf::message_handler numbers{[&](int i) { ints.push_back(i); }};
  while (mailbox.receive(numbers, 0ms)) {
  }
  EXPECT_EQ(ints, (std::vector<int>{1, 2})) << "the kept ones, in arrival order";
  EXPECT_FALSE(mailbox.receive(numbers, 20ms)) << "nothing left: the wait ends at its deadline";
}

TEST(Mailbox, AnswersStatusRequestsWhileItWaits) {
  caf::actor_system_config config;
  caf::actor_system system{config};
  ScopedMailbox mailbox{system};
  mailbox.answer_status([] { return std::string(R"({"round":3})"); });
  caf::scoped_actor asker{system};
  // The request is answered from inside the wait, which then goes on until
  // the number comes.
  auto answer = asker->request(mailbox.handle(), caf::infinite, status_atom::value);
  asker->send(mailbox.handle(), 7);
  int got = 0;
  caf::message_handler numbers{[&](int i) { got = i; }};
  ASSERT_TRUE(mailbox.receive(numbers, 5s));
  EXPECT_EQ(got, 7);
  std::string status;
  answer.receive([&](std::string& s) { status = s; }, [](caf::error&) {});
  EXPECT_EQ(status, R"({"round":3})");
}

// A host whose body waits for a number, answering status meanwhile, and
// reports what it got.
TEST(FiberHost, RunsItsBodyAsAContinuationAndAnswersStatusWhileItWaits) {
  caf::actor_system_config config;
  caf::actor_system system{config};
  caf::scoped_actor test{system};
  std::exception_ptr failure = std::make_exception_ptr(std::runtime_error("not ended"));
  const caf::actor me = caf::actor_cast<caf::actor>(test);
  auto host = spawn_fiber_host(
      test.ptr(),
      [me](Mailbox& mailbox) {
        mailbox.answer_status([] { return std::string("waiting for a number"); });
        mailbox.send(me, std::string("started"));
        int got = 0;
        caf::message_handler numbers{[&](int i) { got = i; }};
        // A string arrives first: kept, not taken, and later taken.
        if (!mailbox.receive(numbers, 30s)) throw std::runtime_error("no number");
        std::string kept;
        caf::message_handler strings{[&](std::string& s) { kept = s; }};
        if (!mailbox.receive(strings, 0ms)) throw std::runtime_error("the string was not kept");
        const bool timed_out = !mailbox.receive(numbers, 30ms);
        mailbox.send(me, std::string("got " + std::to_string(got) + " after '" + kept + "'" +
                                     (timed_out ? ", then a wait ended at its deadline" : "")));
      },
      [&failure](std::exception_ptr e) { failure = std::move(e); });
  std::string status;
  test->receive([&](std::string& s) { status = s; }, caf::after(30s) >> [] {});
  ASSERT_EQ(status, "started");
  test->request(host, 10s, status_atom::value).receive([&](std::string& s) { status = s; }, [](caf::error&) {});
  EXPECT_EQ(status, "waiting for a number") << "answered by the host while its body waits";
  test->send(host, std::string("early"));
  test->send(host, 42);
  std::string report;
  test->receive([&](std::string& s) { report = s; }, caf::after(30s) >> [] {});
  EXPECT_EQ(report, "got 42 after 'early', then a wait ended at its deadline");
  bool down = false;
  test->receive([&](caf::down_msg& d) { down = d.source == host.address(); }, caf::after(30s) >> [] {});
  EXPECT_TRUE(down) << "the host quits when its body returns";
  EXPECT_EQ(failure, nullptr);
}

// The waits of one deadline (a round's: each message ends one) share a
// wake-up: after 100 messages the last wait still ends at the deadline, not
// before it.
TEST(FiberHost, WaitsForOneDeadlineEndAtIt) {
  caf::actor_system_config config;
  caf::actor_system system{config};
  caf::scoped_actor test{system};
  const caf::actor me = caf::actor_cast<caf::actor>(test);
  auto host = spawn_fiber_host(
      test.ptr(),
      [me](Mailbox& mailbox) {
        const auto start = std::chrono::steady_clock::now();
        const auto deadline = start + 500ms;
        int got = 0;
        caf::message_handler numbers{[&](int) { ++got; }};
        mailbox.send(me, std::string("waiting"));
        while (mailbox.receive(numbers, std::chrono::duration_cast<std::chrono::milliseconds>(
                                            deadline - std::chrono::steady_clock::now()))) {
        }
        const bool not_before = std::chrono::steady_clock::now() >= deadline - kSameDeadlineSlack;
        mailbox.send(me, got, not_before);
      },
      [](std::exception_ptr) {});
  test->receive([](std::string&) {}, caf::after(30s) >> [] {});
  for (int i = 0; i < 100; ++i) test->send(host, i);
  int got = 0;
  bool not_before = false;
  test->receive([&](int n, bool b) { got = n, not_before = b; }, caf::after(30s) >> [] {});
  EXPECT_EQ(got, 100);
  EXPECT_TRUE(not_before) << "the last wait ended before its deadline";
}

TEST(FiberHost, WhatTheBodyThrowsEndsTheHostAndIsHandedOver) {
  caf::actor_system_config config;
  caf::actor_system system{config};
  caf::scoped_actor test{system};
  std::string what;
  auto host = spawn_fiber_host(
      test.ptr(),
      [](Mailbox& mailbox) {
        caf::message_handler numbers{[](int) {}};
        mailbox.receive(numbers, 30s);
        throw std::runtime_error("stage 1 refused its assignment");
      },
      [&what](std::exception_ptr e) {
        try {
          if (e) std::rethrow_exception(e);
        } catch (const std::exception& x) {
          what = x.what();
        }
      });
  test->send(host, 1);
  bool down = false;
  test->receive([&](caf::down_msg& d) { down = d.source == host.address(); }, caf::after(30s) >> [] {});
  EXPECT_TRUE(down);
  EXPECT_EQ(what, "stage 1 refused its assignment");
}

// Waiting through the mailbox holds no thread: 200 hosts on a scheduler of
// two threads all wait for a message at once, each answers a status request
// meanwhile, and each finishes when its message comes. Were a wait to hold
// a thread, the third host would never run.
TEST(FiberHost, ManyHostsWaitingHoldNoThread) {
  caf::actor_system_config config;
  config.set("scheduler.max-threads", 2);
  caf::actor_system system{config};
  caf::scoped_actor test{system};
  constexpr int kHosts = 200;
  const caf::actor me = caf::actor_cast<caf::actor>(test);
  std::atomic<int> ended{0};
  std::vector<caf::actor> hosts;
  for (int i = 0; i < kHosts; ++i) {
    hosts.push_back(spawn_fiber_host(
        test.ptr(),
        [me, i](Mailbox& mailbox) {
          mailbox.answer_status([i] { return "host " + std::to_string(i) + " waits"; });
          mailbox.send(me, i);
          int got = -1;
          caf::message_handler numbers{[&](int n) { got = n; }};
          if (!mailbox.receive(numbers, 60s)) throw std::runtime_error("no message");
          mailbox.send(me, std::string("host " + std::to_string(i) + " got " + std::to_string(got)));
        },
        [&ended](std::exception_ptr e) {
          if (!e) ++ended;
        }));
  }
  // Every host is waiting once it has said so.
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  int waiting = 0;
  while (waiting < kHosts && std::chrono::steady_clock::now() < deadline)
    test->receive([&](int) { ++waiting; }, caf::after(1s) >> [] {});
  ASSERT_EQ(waiting, kHosts);
  for (int i = 0; i < kHosts; ++i) {
    std::string status;
    test->request(hosts[i], 10s, status_atom::value).receive([&](std::string& s) { status = s; }, [](caf::error&) {});
    ASSERT_EQ(status, "host " + std::to_string(i) + " waits");
  }
  for (int i = 0; i < kHosts; ++i) test->send(hosts[i], 1000 + i);
  std::set<std::string> reports;
  int downs = 0;
  while ((reports.size() < kHosts || downs < kHosts) && std::chrono::steady_clock::now() < deadline) {
    test->receive([&](std::string& s) { reports.insert(s); }, [&](caf::down_msg&) { ++downs; },
                  caf::after(1s) >> [] {});
  }
  EXPECT_EQ(reports.size(), static_cast<size_t>(kHosts));
  EXPECT_EQ(reports.count("host 7 got 1007"), 1u);
  EXPECT_EQ(downs, kHosts);
  EXPECT_EQ(ended.load(), kHosts);
}

}  // namespace
}  // namespace asteroid::actors
