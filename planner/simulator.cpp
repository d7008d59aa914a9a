#include "planner/simulator.h"

#include "planner/schedule.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <queue>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace asteroid::planner {
namespace {

struct Member {
  int dev = 0, stage = 0, j = 0;
  int offset = 0, samples = 0;
  double fwd_ms = 0, bwd_ms = 0;
  double update_ms = 0;  // the optimizer update after its last backward (or all-reduce)
  int bwd_done = 0;
  bool busy = false;
  std::vector<int> inputs_missing;  // per micro-batch: activation pieces still to arrive
  std::vector<int> grads_missing;   // per micro-batch: gradient pieces still to arrive
  std::optional<OneFOneB> rule;     // what runs next, as in the stage actors
  double last_bwd_end = 0;
};

// A slice of samples that crosses a stage boundary between two members.
struct Piece {
  int from, to;  // members (global index): from is in the earlier stage
  int count;
};

struct LinkState {
  bool busy = false;
  double bandwidth = 0;
  std::deque<int> queue;  // transfers waiting, in send order
};

enum class EventKind { compute_done, transfer_done, allreduce_done };

struct Event {
  double t;
  long seq;
  EventKind kind;
  int index;  // member, transfer or stage
  bool operator>(const Event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
};

}  // namespace

Simulation simulate(const Plan& plan, const ProfileTables& t, const EvalOptions& options) {
  validate_plan(plan, t);
  const int p = static_cast<int>(plan.stages.size());
  const int m = plan.microbatches;
  Simulation sim;

  std::vector<Member> members;
  std::vector<std::vector<int>> stage_members(p);
  for (int s = 0; s < p; ++s) {
    const Stage& st = plan.stages[s];
    int offset = 0;
    for (size_t j = 0; j < st.devices.size(); ++j) {
      Member mb;
      mb.dev = t.index(st.devices[j].id);
      mb.stage = s;
      mb.j = static_cast<int>(j);
      mb.offset = offset;
      mb.samples = st.devices[j].samples;
      offset += mb.samples;
      t.times(mb.dev, st.begin, st.end, mb.samples, &mb.fwd_ms, &mb.bwd_ms);
      mb.update_ms = t.update_ms(mb.dev, st.begin, st.end, options.optimizer);
      mb.inputs_missing.assign(m, 0);
      mb.grads_missing.assign(m, 0);
      mb.rule.emplace(s, p, m);
      stage_members[s].push_back(static_cast<int>(members.size()));
      members.push_back(std::move(mb));
      SimDevice sd;
      sd.id = st.devices[j].id;
      sd.stage = s;
      sim.devices.push_back(sd);
    }
  }
  // Pieces between consecutive groups, by overlapping sample ranges.
  std::vector<std::vector<Piece>> out_fwd(members.size()), out_bwd(members.size());
  for (int s = 0; s + 1 < p; ++s)
    for (int a : stage_members[s])
      for (int b : stage_members[s + 1]) {
        const Member& ma = members[a];
        const Member& mb = members[b];
        int lo = std::max(ma.offset, mb.offset);
        int hi = std::min(ma.offset + ma.samples, mb.offset + mb.samples);
        if (hi <= lo) continue;
        out_fwd[a].push_back({a, b, hi - lo});
        out_bwd[b].push_back({b, a, hi - lo});
        for (int x = 0; x < m; ++x) {
          ++members[b].inputs_missing[x];
          ++members[a].grads_missing[x];
        }
      }
  std::map<std::pair<int, int>, LinkState> links;
  auto link_of = [&](int from_dev, int to_dev) -> LinkState& {
    LinkState& l = links[{from_dev, to_dev}];
    l.bandwidth = t.bandwidth(from_dev, to_dev);
    return l;
  };

  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events;
  long seq = 0;
  double now = 0;
  std::vector<int> group_done(p, 0);
  std::vector<SimOp> current(members.size());

  auto send = [&](const Piece& piece, bool forward, int mbatch) {
    const Member& from = members[piece.from];
    const Member& to = members[piece.to];
    const int boundary = forward ? from.stage : to.stage;
    const Stage& st = plan.stages[boundary];
    SimTransfer tr;
    tr.from = t.id(from.dev);
    tr.to = t.id(to.dev);
    tr.forward = forward;
    tr.boundary = boundary;
    tr.microbatch = mbatch;
    // The slice in the boundary's codec: its own samples' encoded bytes,
    // encoded at the sender's speed and decoded at the receiver's (no codec
    // time for a device the profile has no speed for, as in the cost model).
    const Codec codec = st.to_next;
    const double out = t.out_bytes(st.end - 1);
    tr.codec = codec;
    tr.bytes = piece.count * wire_bytes(codec, out, plan.codec_block);
    if (codec != Codec::fp32) {
      if (t.has_codec(from.dev, codec)) tr.codec_ms += codec_ms(piece.count * out, t.encode_mb_s(from.dev, codec));
      if (t.has_codec(to.dev, codec)) tr.codec_ms += codec_ms(piece.count * out, t.decode_mb_s(to.dev, codec));
    }
    sim.transfers.push_back(tr);
    link_of(from.dev, to.dev).queue.push_back(static_cast<int>(sim.transfers.size()) - 1);
  };

  auto start_op = [&](int x, char kind, int mbatch) {
    Member& mb = members[x];
    mb.busy = true;
    double d = kind == 'F' ? mb.fwd_ms : mb.bwd_ms;
    SimOp op{mb.stage, mb.j, kind, mbatch, now, now + d};
    current[x] = op;
    sim.devices[x].busy_ms += d;
    events.push({now + d, seq++, EventKind::compute_done, x});
  };

  // The member's optimizer update, its last work of the round.
  auto apply_update = [&](int x, double from) {
    sim.devices[x].busy_ms += members[x].update_ms;
    sim.devices[x].finish_ms = from + members[x].update_ms;
  };

  auto kick_member = [&](int x) {
    Member& mb = members[x];
    if (mb.busy) return;
    if (auto op = mb.rule->next()) start_op(x, op->kind == Op::Kind::forward ? 'F' : 'B', op->microbatch);
  };

  auto kick_links = [&]() {
    for (auto& [key, link] : links) {
      if (link.busy || link.queue.empty()) continue;
      int id = link.queue.front();
      link.queue.pop_front();
      link.busy = true;
      SimTransfer& tr = sim.transfers[id];
      tr.start_ms = now;
      tr.end_ms = now + tr.codec_ms + tr.bytes * 8 / 1e3 / link.bandwidth;
      events.push({tr.end_ms, seq++, EventKind::transfer_done, id});
    }
  };

  auto handle = [&](const Event& ev) {
    switch (ev.kind) {
      case EventKind::compute_done: {
        Member& mb = members[ev.index];
        mb.busy = false;
        const SimOp& op = current[ev.index];
        sim.ops.push_back(op);
        if (op.kind == 'F') {
          for (const Piece& piece : out_fwd[ev.index]) send(piece, true, op.microbatch);
        } else {
          ++mb.bwd_done;
          for (const Piece& piece : out_bwd[ev.index]) send(piece, false, op.microbatch);
          if (mb.bwd_done == m) {
            mb.last_bwd_end = now;
            const bool alone = stage_members[mb.stage].size() == 1;
            if (alone) apply_update(ev.index, now);
            if (++group_done[mb.stage] == static_cast<int>(stage_members[mb.stage].size()) && !alone) {
              double start = 0;
              const auto& g = stage_members[mb.stage];
              for (int x : g) start = std::max(start, members[x].last_bwd_end);
              const Stage& st = plan.stages[mb.stage];
              const double ta = allreduce_time(t, st, st.allreduce, plan.codec_block).ta_ms;
              events.push({start + ta, seq++, EventKind::allreduce_done, mb.stage});
            }
          }
        }
        break;
      }
      case EventKind::transfer_done: {
        const SimTransfer& tr = sim.transfers[ev.index];
        int from = t.index(tr.from), to = t.index(tr.to);
        links[{from, to}].busy = false;
        // The receiving member.
        for (size_t x = 0; x < members.size(); ++x) {
          if (members[x].dev != to) continue;
          Member& receiver = members[x];
          if (tr.forward) {
            if (--receiver.inputs_missing[tr.microbatch] == 0) receiver.rule->forward_ready(tr.microbatch);
          } else if (--receiver.grads_missing[tr.microbatch] == 0) {
            receiver.rule->backward_ready(tr.microbatch);
          }
        }
        break;
      }
      case EventKind::allreduce_done:
        for (int x : stage_members[ev.index]) {
          sim.devices[x].allreduce_ms = ev.t - members[x].last_bwd_end;
          apply_update(x, ev.t);
        }
        break;
    }
  };

  // The first stage's inputs come from its data: all ready.
  for (int x : stage_members[0])
    for (int b = 0; b < m; ++b) members[x].rule->forward_ready(b);
  for (size_t x = 0; x < members.size(); ++x) kick_member(static_cast<int>(x));
  while (!events.empty()) {
    now = events.top().t;
    // Everything that happens at this instant (including zero-byte
    // transfers it starts) lands before anyone picks new work, so that a
    // backward and a forward that become ready together go in 1F1B order.
    for (;;) {
      while (!events.empty() && events.top().t == now) {
        Event ev = events.top();
        events.pop();
        handle(ev);
      }
      kick_links();
      if (events.empty() || events.top().t != now) break;
    }
    for (size_t x = 0; x < members.size(); ++x) kick_member(static_cast<int>(x));
  }
  for (const Member& mb : members)
    if (mb.bwd_done != m)
      throw std::logic_error("simulation deadlocked: device " + t.id(mb.dev) + " of stage " +
                             std::to_string(mb.stage) + " finished " + std::to_string(mb.bwd_done) +
                             " of " + std::to_string(m) + " backward passes");
  for (const SimDevice& d : sim.devices) sim.round_ms = std::max(sim.round_ms, d.finish_ms);
  double busy = 0;
  for (SimDevice& d : sim.devices) {
    d.idle_ms = sim.round_ms - d.busy_ms - d.allreduce_ms;
    busy += d.busy_ms;
  }
  if (sim.round_ms > 0 && !sim.devices.empty())
    sim.bubble_fraction = 1 - busy / (sim.devices.size() * sim.round_ms);
  std::stable_sort(sim.ops.begin(), sim.ops.end(), [](const SimOp& a, const SimOp& b) {
    return a.start_ms != b.start_ms ? a.start_ms < b.start_ms : a.stage < b.stage;
  });
  (void)options;
  return sim;
}

std::string format_grid(const Plan& plan, const Simulation& sim) {
  const int p = static_cast<int>(plan.stages.size());
  // (stage, kind, micro-batch) -> earliest start over the group.
  std::map<std::tuple<int, char, int>, double> start;
  for (const SimOp& op : sim.ops) {
    auto key = std::make_tuple(op.stage, op.kind, op.microbatch);
    auto it = start.find(key);
    if (it == start.end() || op.start_ms < it->second) start[key] = op.start_ms;
  }
  std::vector<double> times;
  for (const auto& [key, ts] : start) times.push_back(ts);
  std::sort(times.begin(), times.end());
  times.erase(std::unique(times.begin(), times.end()), times.end());
  std::vector<std::vector<std::string>> cells(p, std::vector<std::string>(times.size()));
  for (const auto& [key, ts] : start) {
    auto [stage, kind, mb] = key;
    size_t col = std::lower_bound(times.begin(), times.end(), ts) - times.begin();
    cells[stage][col] = std::to_string(stage) + kind + std::to_string(mb);
  }
  size_t width = 1, label = 5;
  std::vector<std::string> heads;
  for (double ts : times) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", ts);
    heads.push_back(buf);
    width = std::max(width, heads.back().size());
  }
  for (int s = 0; s < p; ++s) label = std::max(label, ("stage" + std::to_string(s)).size());
  for (const auto& row : cells)
    for (const auto& c : row) width = std::max(width, c.size());
  std::ostringstream out;
  auto line = [&](const std::string& first, const std::vector<std::string>& rest) {
    std::string l = first + std::string(label + 1 - first.size(), ' ');
    for (const std::string& c : rest) l += c + std::string(width + 1 - c.size(), ' ');
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out << l << "\n";
  };
  line("t(ms)", heads);
  for (int s = 0; s < p; ++s) {
    std::vector<std::string> row;
    for (const auto& c : cells[s]) row.push_back(c.empty() ? "." : c);
    line("stage" + std::to_string(s), row);
  }
  return out.str();
}

std::string chrome_trace(const Plan& plan, const Simulation& sim) {
  using nlohmann::json;
  json events = json::array();
  std::map<std::string, int> tid;
  for (size_t i = 0; i < sim.devices.size(); ++i) {
    tid[sim.devices[i].id] = static_cast<int>(i);
    events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", 0}, {"tid", static_cast<int>(i)},
                      {"args", {{"name", sim.devices[i].id + " (stage " + std::to_string(sim.devices[i].stage) + ")"}}}});
  }
  for (const SimOp& op : sim.ops) {
    const std::string& id = plan.stages[op.stage].devices[op.member].id;
    events.push_back({{"name", std::to_string(op.stage) + op.kind + std::to_string(op.microbatch)},
                      {"ph", "X"},
                      {"pid", 0},
                      {"tid", tid[id]},
                      {"ts", op.start_ms * 1e3},
                      {"dur", (op.end_ms - op.start_ms) * 1e3}});
  }
  for (const SimTransfer& tr : sim.transfers) {
    events.push_back({{"name", std::string(tr.forward ? "act " : "grad ") + std::to_string(tr.microbatch) + " -> " + tr.to},
                      {"ph", "X"},
                      {"pid", 1},
                      {"tid", tid[tr.from]},
                      {"ts", tr.start_ms * 1e3},
                      {"dur", (tr.end_ms - tr.start_ms) * 1e3}});
  }
  return json{{"traceEvents", events}}.dump();
}

}  // namespace asteroid::planner
