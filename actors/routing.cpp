#include "actors/routing.h"

#include <algorithm>

namespace asteroid::actors {

std::vector<Range> member_ranges(const std::vector<uint32_t>& samples) {
  std::vector<Range> ranges;
  uint32_t offset = 0;
  for (uint32_t y : samples) {
    ranges.push_back({offset, offset + y});
    offset += y;
  }
  return ranges;
}

std::vector<Slice> route(const Range& mine, const std::vector<Range>& theirs) {
  std::vector<Slice> slices;
  for (uint32_t i = 0; i < theirs.size(); ++i) {
    const uint32_t begin = std::max(mine.begin, theirs[i].begin);
    const uint32_t end = std::min(mine.end, theirs[i].end);
    if (begin < end) slices.push_back({i, {begin, end}});
  }
  return slices;
}

}  // namespace asteroid::actors
