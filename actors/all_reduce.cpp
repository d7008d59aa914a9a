#include "actors/all_reduce.h"

#include <stdexcept>

namespace asteroid::actors {

GradientBuckets::GradientBuckets(const std::vector<int64_t>& parameter_values, int64_t min_values)
    : sizes_(parameter_values), offsets_(parameter_values.size()), bucket_of_(parameter_values.size()) {
  if (min_values < 1) throw std::invalid_argument("gradient buckets need at least one value each");
  int64_t offset = 0;
  for (size_t p = 0; p < sizes_.size(); ++p) {
    if (sizes_[p] < 0) throw std::invalid_argument("a parameter cannot have a negative size");
    offsets_[p] = offset;
    offset += sizes_[p];
  }
  // From the last parameter backwards; a bucket closes once it is big enough.
  int64_t end = offset;
  bool open = false;  // parameters wait for the bucket being filled
  for (size_t p = sizes_.size(); p-- > 0;) {
    bucket_of_[p] = buckets_.size();
    open = true;
    if (end - offsets_[p] >= min_values) {
      buckets_.push_back({offsets_[p], end});
      end = offsets_[p];
      open = false;
    }
  }
  if (open || buckets_.empty()) buckets_.push_back({0, end});  // the first parameters, under min_values
  missing_.assign(buckets_.size(), 0);
  for (size_t p = 0; p < sizes_.size(); ++p) ++missing_[bucket_of_[p]];
  final_.assign(sizes_.size(), false);
}

std::optional<size_t> GradientBuckets::ready(size_t parameter) {
  if (final_.at(parameter)) return std::nullopt;
  final_[parameter] = true;
  const size_t b = bucket_of_[parameter];
  if (--missing_[b] == 0) return b;
  return std::nullopt;
}

void GradientBuckets::reset() {
  final_.assign(sizes_.size(), false);
  missing_.assign(buckets_.size(), 0);
  for (size_t p = 0; p < sizes_.size(); ++p) ++missing_[bucket_of_[p]];
}

uint32_t Ring::chunk_sent_at(uint32_t step) const {
  return step < n - 1 ? wrap(int64_t{member} - step) : wrap(int64_t{member} + 1 - (step - (n - 1)));
}

}  // namespace asteroid::actors
