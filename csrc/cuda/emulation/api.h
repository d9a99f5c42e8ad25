// The host-facing side of the emulated CUDA device (SPOOFLOSS_CUDA_EMULATION
// builds only): the stream type, the settings a test changes (scheduling seed,
// multiprocessor count), the per-call counters and the kernel coverage. Host
// code (csrc/cuda/*_ops.cpp, csrc/bindings.cpp) includes this header only; the
// kernel-side surface (threadIdx, __syncthreads, ...) is in device.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

// As in the CUDA runtime: an opaque stream handle. The emulator has one
// stream (null): kernels run to completion, in order, at their launch.
struct CUstream_st;
using cudaStream_t = CUstream_st*;

namespace spoofloss {
namespace emulation {

// Threads of a block run in a random order between barriers, and blocks in a
// random order, both drawn from this seed (default 0, or the environment
// variable SPOOFLOSS_EMULATION_SEED). A correct kernel gives the same bits for
// every seed; a race on shared or global memory shows up as a difference.
void set_seed(uint64_t seed);
uint64_t seed();

// What cudaDeviceProp::multiProcessorCount reports (default 132, an H100 SXM,
// or the environment variable SPOOFLOSS_EMULATED_MULTIPROCESSORS).
void set_multiprocessor_count(int count);
int multiprocessor_count();

// What cudaDeviceProp::maxGridSize[0] reports and the launch check enforces
// (default 2^31 - 1, as on every GPU); a test lowers it to make kernels loop
// over a batch larger than their grid.
void set_max_grid_x(int64_t blocks);
int64_t max_grid_x();

// What a GPU run of the ops costs in launches and scratch memory, counted
// since the last reset (the tests pin them per op call).
struct Counters {
  int64_t launches = 0;
  int64_t scratch_allocations = 0;
  int64_t scratch_bytes = 0;
  std::vector<std::string> kernels;  // in launch order
};
void reset_counters();
Counters counters();

// Called by the host code for every scratch buffer it allocates.
void count_scratch(int64_t bytes);

// Every kernel instantiation launched since the library was loaded, with the
// number of launches: "pool_chunks_kernel<c10::Half, float, 8>" -> 12.
std::map<std::string, int64_t> coverage();

// Throws c10::Error with the emulator's report when the last launch on this
// thread failed (an invalid configuration, a barrier not every thread reached,
// a shuffle with a lane missing, a misaligned vector access), and clears it:
// what C10_CUDA_KERNEL_LAUNCH_CHECK does on a GPU.
void check_last_launch();

}  // namespace emulation
}  // namespace spoofloss
