// Which samples of a micro-batch each group member owns, and where slices go
// between two groups. A group splits every micro-batch into contiguous
// ranges in member order (member 0 owns [0, y_0), member 1 the next y_1, ...),
// so every sample's path through the pipeline is fixed by the plan.
#pragma once

#include <cstdint>
#include <vector>

namespace asteroid::actors {

struct Range {
  uint32_t begin = 0, end = 0;
  uint32_t size() const { return end - begin; }
  bool operator==(const Range& o) const { return begin == o.begin && end == o.end; }
};

// The ranges of a group whose members take `samples[i]` samples each.
std::vector<Range> member_ranges(const std::vector<uint32_t>& samples);

struct Slice {
  uint32_t member = 0;  // index into the other group
  Range samples;        // micro-batch sample range, inside `mine`
};

// The non-empty intersections of `mine` with each range of the other group,
// in member order: where a member sends the parts of its slice.
std::vector<Slice> route(const Range& mine, const std::vector<Range>& theirs);

}  // namespace asteroid::actors
