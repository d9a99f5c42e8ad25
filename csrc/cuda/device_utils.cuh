// Small device helpers shared by the CUDA kernels: block-wide sums with a fixed
// reduction tree (deterministic), aligned vector access, and launch geometry.
#pragma once

#include "device_runtime.h"
#include "launch.h"

#include <cstdint>

namespace spoofloss {
namespace cuda {

constexpr int kWarp = 32;

// Sums N values across the block; the result is valid in thread 0. `shared`
// holds kThreads / kWarp * N values. The order of additions depends only on
// the thread index, so results are bit-for-bit repeatable.
template <typename T, int N>
__device__ inline void block_sum(T (&values)[N], T* shared) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
#pragma unroll
    for (int i = 0; i < N; ++i) values[i] += __shfl_down_sync(0xffffffffu, values[i], offset);
  }
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) shared[warp * N + i] = values[i];
  }
  __syncthreads();
  if (warp == 0) {
    constexpr int kWarps = kThreads / kWarp;
#pragma unroll
    for (int i = 0; i < N; ++i) values[i] = lane < kWarps ? shared[lane * N + i] : T(0);
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
#pragma unroll
      for (int i = 0; i < N; ++i) values[i] += __shfl_down_sync(0xffffffffu, values[i], offset);
    }
  }
  __syncthreads();  // `shared` may be reused by the caller
}

// *out = (sum of values [n]) / divisor, by one block in a fixed order: the
// last step of every reduced loss.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) sum_kernel(
    const acc_t* __restrict__ values, int64_t n, acc_t divisor, acc_t* __restrict__ out) {
  SPOOFLOSS_SHARED_ARRAY(acc_t, shared, kThreads / kWarp);
  acc_t total[1] = {acc_t(0)};
  for (int64_t i = threadIdx.x; i < n; i += kThreads) total[0] += values[i];
  block_sum(total, shared);
  if (threadIdx.x == 0) *out = total[0] / divisor;
}

// VEC consecutive elements moved as one 16-byte (or smaller) access.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Packed {
  T values[VEC];
};

template <typename T, int VEC>
__device__ inline Packed<T, VEC> load_packed(const T* address) {
  SPOOFLOSS_CHECK_ALIGNED(address, sizeof(Packed<T, VEC>), "vector load");
  return *reinterpret_cast<const Packed<T, VEC>*>(address);
}

template <typename T, int VEC>
__device__ inline void store_packed(T* address, const Packed<T, VEC>& packed) {
  SPOOFLOSS_CHECK_ALIGNED(address, sizeof(Packed<T, VEC>), "vector store");
  *reinterpret_cast<Packed<T, VEC>*>(address) = packed;
}

// Elements per 16-byte access.
template <typename T>
constexpr int packed_width() {
  return 16 / sizeof(T) > 0 ? static_cast<int>(16 / sizeof(T)) : 1;
}

}  // namespace cuda
}  // namespace spoofloss
