// Kernels with the bugs the emulator exists to catch, one per case, plus a
// correct block sum (the emulator must run correct code unchanged). Each is
// the smallest kernel that has its bug; tests/test_emulation.py states what
// the emulator must report for each.
#include "../device_runtime.h"
#include "../device_utils.cuh"
#include "selftest.h"

namespace spoofloss {
namespace emulation {
namespace {

using cuda::kThreads;
using cuda::kWarp;

// Correct: out[0] = sum of in [n], by one block (block_sum's shuffles and barriers).
__global__ void block_sum_kernel(const float* in, int64_t n, float* out) {
  SPOOFLOSS_SHARED_ARRAY(float, shared, kThreads / kWarp);
  float total[1] = {0.0f};
  for (int64_t i = threadIdx.x; i < n; i += kThreads) total[0] += in[i];
  cuda::block_sum(total, shared);
  if (threadIdx.x == 0) out[0] = total[0];
}

// Bug: half the block leaves before a barrier the other half waits at.
__global__ void missed_barrier_kernel(float* out) {
  if (threadIdx.x >= kThreads / 2) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// Bug: even and odd threads wait at two different barriers.
__global__ void divergent_barriers_kernel(float* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

// Bug: lane 5 leaves before a full-mask shuffle.
__global__ void shuffle_missing_lane_kernel(float* out) {
  if (threadIdx.x == 5) return;
  const float v = __shfl_down_sync(0xffffffffu, static_cast<float>(threadIdx.x), 1);
  out[threadIdx.x] = v;
}

// Bug: a missing barrier between writing shared memory and reading another
// thread's element; out[t] depends on which thread ran first.
__global__ void shared_race_kernel(float* out) {
  SPOOFLOSS_SHARED_ARRAY(float, shared, kThreads);
  shared[threadIdx.x] = static_cast<float>(threadIdx.x + 1);
  // __syncthreads() belongs here
  out[threadIdx.x] = shared[(threadIdx.x + 1) % kThreads];
}

// Bug: every block writes the same element; the last block to run wins.
__global__ void global_race_kernel(float* out) {
  if (threadIdx.x == 0) out[0] = static_cast<float>(blockIdx.x + 1);
}

// Bug: a 16-byte vector load from an address 4 bytes past an aligned one.
__global__ void misaligned_load_kernel(const float* in, float* out) {
  const auto packed = cuda::load_packed<float, 4>(in + 1);
  if (threadIdx.x == 0) out[0] = packed.values[0];
}

// Bug: reads scratch that nothing wrote.
__global__ void unwritten_scratch_kernel(const float* scratch, int64_t n, float* out) {
  for (int64_t i = threadIdx.x; i < n; i += kThreads) out[i] = scratch[i];
}

// Bug: reads shared memory that nothing wrote.
__global__ void uninitialized_shared_kernel(float* out) {
  SPOOFLOSS_SHARED_ARRAY(float, shared, kThreads);
  out[threadIdx.x] = shared[threadIdx.x];
}

// Bug: reads one element past the end of in [n].
__global__ void out_of_bounds_kernel(const float* in, int64_t n, float* out) {
  if (threadIdx.x == 0) out[0] = in[n];
}

// Bug: writes one element past the end of a shared array.
__global__ void shared_out_of_bounds_kernel(float* out) {
  SPOOFLOSS_SHARED_ARRAY(float, shared, kThreads);
  shared[threadIdx.x + 1] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = shared[threadIdx.x];
}

// Correct kernel body, launched with configurations a GPU refuses.
__global__ void trivial_kernel(float* out) {
  if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0) out[0] = 1.0f;
}

}  // namespace

const char* const kSelftestCases[] = {
    "block_sum",          "missed_barrier",      "divergent_barriers",   "shuffle_missing_lane",
    "shared_race",        "global_race",         "misaligned_load",      "unwritten_scratch",
    "uninitialized_shared", "out_of_bounds",     "shared_out_of_bounds", "grid_x_too_large",
    "grid_y_too_large",   "zero_grid",           "block_too_large",      "dynamic_shared_too_large",
};
const int kSelftestCaseCount = sizeof(kSelftestCases) / sizeof(kSelftestCases[0]);

bool launch_selftest(const std::string& name, const float* in, float* out, float* scratch, int64_t n) {
  cudaStream_t stream = nullptr;
  if (name == "block_sum") {
    SPOOFLOSS_LAUNCH(1, kThreads, 0, stream, block_sum_kernel)(in, n, out);
  } else if (name == "missed_barrier") {
    SPOOFLOSS_LAUNCH(1, kThreads, 0, stream, missed_barrier_kernel)(out);
  } else if (name == "divergent_barriers") {
    SPOOFLOSS_LAUNCH(1, kThreads, 0, stream, divergent_barriers_kernel)(out);
  } else if (name == "shuffle_missing_lane") {
    SPOOFLOSS_LAUNCH(1, kThreads, 0, stream, shuffle_missing_lane_kernel)(out);
  } else if (name == "shared_race") {
    SPOOFLOSS_LAUNCH(1, kThreads, 0, stream, shared_race_kernel)(out);
  } else if (name == "global_race") {
    SPOOFLOSS_LAUNCH(64, kThreads, 0, stream, global_race_kernel)(out);
  } else if (name == "misaligned_load") {
    SPOOFLOSS_LAUNCH(1, kThreads, 0, stream, misaligned_load_kernel)(in, out);
  } else if (name == "unwritten_scratch") {
    SPOOFLOSS_LAUNCH(1, kThreads, 0, stream, unwritten_scratch_kernel)(scratch, n, out);
  } else if (name == "uninitialized_shared") {
    SPOOFLOSS_LAUNCH(1, kThreads, 0, stream, uninitialized_shared_kernel)(out);
  } else if (name == "out_of_bounds") {
    SPOOFLOSS_LAUNCH(1, kThreads, 0, stream, out_of_bounds_kernel)(in, n, out);
  } else if (name == "shared_out_of_bounds") {
    SPOOFLOSS_LAUNCH(1, kThreads, 0, stream, shared_out_of_bounds_kernel)(out);
  } else if (name == "grid_x_too_large") {
    SPOOFLOSS_LAUNCH(dim3(1u << 31), kThreads, 0, stream, trivial_kernel)(out);
  } else if (name == "grid_y_too_large") {
    SPOOFLOSS_LAUNCH(dim3(1, 65536), kThreads, 0, stream, trivial_kernel)(out);
  } else if (name == "zero_grid") {
    SPOOFLOSS_LAUNCH(0, kThreads, 0, stream, trivial_kernel)(out);
  } else if (name == "block_too_large") {
    SPOOFLOSS_LAUNCH(1, 1025, 0, stream, trivial_kernel)(out);
  } else if (name == "dynamic_shared_too_large") {
    SPOOFLOSS_LAUNCH(1, kThreads, 49 * 1024, stream, trivial_kernel)(out);
  } else {
    return false;
  }
  SPOOFLOSS_LAUNCH_CHECK();
  return true;
}

}  // namespace emulation
}  // namespace spoofloss
