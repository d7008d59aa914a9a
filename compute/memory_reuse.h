// Keeps the memory of freed tensors in the process for the next ones.
//
// glibc gives a block above its mmap threshold (128 KB, rising to at most
// 32 MB) back to the kernel when it is freed, and trims the top of its heap
// once 128 KB+ are free there; the next micro-batch then faults every page
// of its activations and gradients in again. In this project's VM a page
// fault costs enough that a stage ran 2-3.5x slower than its CPU share
// allows (perf: 29 % of the node's time in the hypervisor's interrupt path,
// the rest of the kernel share in page-fault and unmap code), and by how
// much changed from run to run. Training allocates the same sizes every
// micro-batch, so the process keeps what it freed: blocks up to 1 GiB come
// from the heap and the heap is not trimmed until about 2 GiB of it is free. The price
// is a resident size at the job's peak, which the planner's memory model
// already assumes.
#pragma once

namespace asteroid::compute {

// Call once, before the first tensor. Returns false if glibc refused a
// setting (then nothing else changes).
bool keep_freed_memory();

}  // namespace asteroid::compute
