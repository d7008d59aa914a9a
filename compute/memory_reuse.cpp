#include "compute/memory_reuse.h"

#include <malloc.h>

namespace asteroid::compute {

bool keep_freed_memory() {
  constexpr int kMmapThreshold = 1 << 30;  // bytes: larger blocks are still mapped on their own
  const bool mmap_ok = ::mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1;
  // M_TRIM_THRESHOLD takes an int: its largest value, about 2 GiB.
  const bool trim_ok = ::mallopt(M_TRIM_THRESHOLD, 0x7fffffff) == 1;
  return mmap_ok && trim_ok;
}

}  // namespace asteroid::compute
