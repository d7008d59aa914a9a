// The arithmetic of a group's bucketed ring all-reduce, as pure code (no
// actors, no Torch): which flat ranges of a stage's gradients form the
// buckets, when a bucket is complete during the last backward, and which
// chunk of a bucket a member sends and receives at each ring step.
//
// Buckets (as DDP's): consecutive parameters, taken from the last one
// backwards (the order backward finishes them), each at least `min_values`
// float32 values except possibly the one holding the first parameters. A
// bucket's ring starts as soon as its parameters are final, while the
// backward of earlier layers still runs; each bucket is its own ring of
// 2 (n - 1) steps over n chunks of its range.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace asteroid::actors {

class GradientBuckets {
 public:
  struct Bucket {
    int64_t begin = 0, end = 0;  // flat values [begin, end)
  };
  // `parameter_values`: values of each parameter, in flat order.
  GradientBuckets(const std::vector<int64_t>& parameter_values, int64_t min_values);

  // buckets()[0] holds the last parameters (the first to be final).
  const std::vector<Bucket>& buckets() const { return buckets_; }
  size_t parameter_count() const { return offsets_.size(); }
  int64_t offset(size_t parameter) const { return offsets_.at(parameter); }
  int64_t values(size_t parameter) const { return sizes_.at(parameter); }
  size_t bucket_of(size_t parameter) const { return bucket_of_.at(parameter); }

  // Marks a parameter final (again: no effect); returns its bucket when that
  // makes every parameter of the bucket final.
  std::optional<size_t> ready(size_t parameter);
  bool complete(size_t bucket) const { return missing_.at(bucket) == 0; }
  // Every parameter pending again (a new backward).
  void reset();

 private:
  std::vector<int64_t> sizes_, offsets_;
  std::vector<size_t> bucket_of_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> missing_;
  std::vector<bool> final_;
};

// Ring positions for member `member` of a group of `n` (n >= 2): at step
// s < n - 1 (reduce-scatter) a member sends its partial sum of one chunk
// and adds the chunk it receives; at the steps after (all-gather) it sends
// a finished chunk and copies the one it receives. Member m sends to m + 1.
struct Ring {
  uint32_t n = 1, member = 0;
  uint32_t steps() const { return 2 * (n - 1); }
  uint32_t chunk_sent_at(uint32_t step) const;
  uint32_t chunk_received_at(uint32_t step) const { return wrap(int64_t{chunk_sent_at(step)} - 1); }
  // Values [begin, end) of chunk `chunk` of a range of `total` values.
  std::pair<int64_t, int64_t> chunk_bounds(uint32_t chunk, int64_t total) const {
    return {total * chunk / n, total * (chunk + 1) / n};
  }
  uint32_t next() const { return wrap(int64_t{member} + 1); }
  uint32_t wrap(int64_t x) const {
    const int64_t m = n;
    return static_cast<uint32_t>(((x % m) + m) % m);
  }
};

}  // namespace asteroid::actors
