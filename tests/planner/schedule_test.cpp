// The 1F1B rule without actors: literal orders, the window bound, and a tiny
// event simulation of P stages showing that the rule alone, fed by message
// arrivals, produces the canonical 1F1B order on every stage.
#include <gtest/gtest.h>

#include <map>
#include <queue>
#include <sstream>

#include "planner/schedule.h"

namespace asteroid::planner {
namespace {

std::string text(const std::vector<Op>& ops) {
  std::ostringstream out;
  for (const Op& op : ops) out << to_string(op) << ' ';
  return out.str();
}

TEST(OneFOneB, CanonicalOrderLiterals) {
  // Stage 0 of 3, 4 micro-batches: warm-up of min(4, 3) = 3 forwards.
  EXPECT_EQ(text(canonical_1f1b(0, 3, 4)), "F0 F1 F2 B0 F3 B1 B2 B3 ");
  // The last stage alternates from the start.
  EXPECT_EQ(text(canonical_1f1b(2, 3, 4)), "F0 B0 F1 B1 F2 B2 F3 B3 ");
  // Fewer micro-batches than stages: the window is M.
  EXPECT_EQ(text(canonical_1f1b(0, 4, 2)), "F0 F1 B0 B1 ");
}

TEST(OneFOneB, WindowIsMinOfMicrobatchesAndStagesLeft) {
  EXPECT_EQ(OneFOneB(0, 4, 8).window(), 4);
  EXPECT_EQ(OneFOneB(3, 4, 8).window(), 1);
  EXPECT_EQ(OneFOneB(1, 4, 2).window(), 2);
}

TEST(OneFOneB, FirstStageStopsAtItsWindowUntilABackwardArrives) {
  OneFOneB rule(0, 3, 6);
  for (int mb = 0; mb < 6; ++mb) rule.forward_ready(mb);
  std::vector<Op> ran;
  while (auto op = rule.next()) ran.push_back(*op);
  EXPECT_EQ(text(ran), "F0 F1 F2 ");
  EXPECT_EQ(rule.in_flight(), 3);
  rule.backward_ready(1);  // out of order: B1 may not run before B0
  EXPECT_FALSE(rule.next().has_value());
  rule.backward_ready(0);
  EXPECT_EQ(to_string(*rule.next()), "B0");
  EXPECT_EQ(to_string(*rule.next()), "F3");  // the window has room again
  EXPECT_EQ(to_string(*rule.next()), "B1");
  EXPECT_EQ(to_string(*rule.next()), "F4");
  EXPECT_FALSE(rule.next().has_value());
}

TEST(OneFOneB, WithTheWindowFullAWaitingForwardWaitsForTheBackward) {
  OneFOneB rule(1, 3, 4);  // window 2
  rule.forward_ready(0);
  rule.forward_ready(1);
  rule.forward_ready(2);
  EXPECT_EQ(to_string(*rule.next()), "F0");
  EXPECT_EQ(to_string(*rule.next()), "F1");
  EXPECT_FALSE(rule.next().has_value()) << "F2 ran with the window full";
  rule.backward_ready(0);
  EXPECT_EQ(to_string(*rule.next()), "B0");
  EXPECT_EQ(to_string(*rule.next()), "F2");
}

TEST(OneFOneB, TheOrderDoesNotDependOnArrivalTimes) {
  // Whatever order inputs and gradients arrive in, the ops come out in the
  // canonical order: everything ready up front gives the same order as
  // releasing one thing at a time.
  for (int stages = 2; stages <= 4; ++stages) {
    for (int p = 0; p < stages - 1; ++p) {
      OneFOneB rule(p, stages, 6);
      for (int mb = 0; mb < 6; ++mb) {
        rule.forward_ready(mb);
        rule.backward_ready(mb);
      }
      std::vector<Op> ran;
      while (auto op = rule.next()) ran.push_back(*op);
      EXPECT_EQ(text(ran), text(canonical_1f1b(p, stages, 6))) << "stage " << p << " of " << stages;
    }
  }
}

TEST(OneFOneB, LastStageRunsEachBackwardRightAfterItsForward) {
  OneFOneB rule(2, 3, 3);
  for (int mb = 0; mb < 3; ++mb) rule.forward_ready(mb);
  std::vector<Op> ran;
  while (auto op = rule.next()) ran.push_back(*op);
  EXPECT_EQ(text(ran), text(canonical_1f1b(2, 3, 3)));
  EXPECT_TRUE(rule.finished());
}

// A discrete-event run of P stages, each with its own rule, where an op
// takes `forward` or `backward` time units and messages arrive `latency`
// after they are sent. Returns every stage's order and checks the window.
std::vector<std::vector<Op>> simulate(int stages, int microbatches, double forward, double backward,
                                      double latency) {
  struct Event {
    double time;
    int seq;
    int stage;
    bool is_forward_input;
    int microbatch;
    bool operator>(const Event& o) const { return time != o.time ? time > o.time : seq > o.seq; }
  };
  std::vector<OneFOneB> rules;
  for (int p = 0; p < stages; ++p) rules.emplace_back(p, stages, microbatches);
  for (int mb = 0; mb < microbatches; ++mb) rules[0].forward_ready(mb);
  std::vector<double> free_at(stages, 0);
  std::vector<std::vector<Op>> order(stages);
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events;
  int seq = 0;
  double now = 0;
  auto run_ready = [&](int p) {
    while (free_at[p] <= now) {
      auto op = rules[p].next();
      if (!op) return;
      EXPECT_LE(rules[p].in_flight(), rules[p].window());
      order[p].push_back(*op);
      const double end = now + (op->kind == Op::Kind::forward ? forward : backward);
      free_at[p] = end;
      if (op->kind == Op::Kind::forward && p + 1 < stages) {
        events.push({end + latency, seq++, p + 1, true, op->microbatch});
      }
      if (op->kind == Op::Kind::backward && p > 0) events.push({end + latency, seq++, p - 1, false, op->microbatch});
      events.push({end, seq++, p, false, -1});  // the stage is free again
    }
  };
  for (int p = 0; p < stages; ++p) run_ready(p);
  while (!events.empty()) {
    Event e = events.top();
    events.pop();
    now = e.time;
    if (e.microbatch >= 0) {
      if (e.is_forward_input) {
        rules[e.stage].forward_ready(e.microbatch);
      } else {
        rules[e.stage].backward_ready(e.microbatch);
      }
    }
    // Deliver everything that arrives at the same instant before deciding.
    if (!events.empty() && events.top().time == now) continue;
    for (int p = 0; p < stages; ++p) run_ready(p);
  }
  for (int p = 0; p < stages; ++p) EXPECT_TRUE(rules[p].finished()) << "stage " << p << " did not finish";
  return order;
}

TEST(OneFOneB, MessageFlowAloneProducesTheCanonicalOrder) {
  for (int stages = 1; stages <= 5; ++stages) {
    for (int microbatches = 1; microbatches <= 8; ++microbatches) {
      for (double latency : {0.0, 0.3}) {
        const auto order = simulate(stages, microbatches, 1.0, 2.0, latency);
        for (int p = 0; p < stages; ++p) {
          EXPECT_EQ(text(order[p]), text(canonical_1f1b(p, stages, microbatches)))
              << "stage " << p << " of " << stages << ", " << microbatches << " micro-batches, latency " << latency;
        }
      }
    }
  }
}

}  // namespace
}  // namespace asteroid::planner
