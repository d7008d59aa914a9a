// What the stages recorded, turned into something to look at: a
// Chrome/Perfetto trace (one process per device, one thread per stage
// member) and the step x stage grid ("2F0" = stage 2 forward of
// micro-batch 0). Pure functions over trace events.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "messages/envelope.h"

namespace asteroid::actors {

// Device id of (stage, member), to name the trace's rows.
using MemberNames = std::map<std::pair<uint32_t, uint32_t>, std::string>;

// Chrome trace-event JSON ("traceEvents", complete events in microseconds
// from the first event), loadable in ui.perfetto.dev and chrome://tracing.
std::string perfetto_json(const std::vector<messages::TraceEvent>& events, const MemberNames& names);

// The forwards and backwards of one round as a grid: one row per stage
// member, one column per step (ops ordered by start time within a row, and
// columns aligned by the order in which ops started across the pipeline).
std::string step_grid(const std::vector<messages::TraceEvent>& events, uint64_t round, const MemberNames& names);

struct TimeBreakdown {
  double compute_ms = 0;    // forward + backward + optimizer step
  double send_ms = 0;       // encoding and handing messages to the network
  double all_reduce_ms = 0;
  double span_ms = 0;       // first event start to last event end
  double idle_ms() const { return span_ms - compute_ms - send_ms - all_reduce_ms; }
};

// Per device: where its time went over the given events.
std::map<std::string, TimeBreakdown> time_breakdown(const std::vector<messages::TraceEvent>& events,
                                                    const MemberNames& names);

}  // namespace asteroid::actors
