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

// A running sum with Kahan's compensation: the rounding error of each addition
// is carried into the next, so a thread's sum of thousands of values (a batch
// of 1M losses over 256 threads) stays within a few ulp instead of growing with
// the count. Additions only, so nvcc cannot contract anything into an FMA;
// deterministic. Once the sum is not finite the compensation stops (inf stays
// inf instead of becoming inf - inf = NaN).
template <typename T>
struct CompensatedSum {
  T sum = T(0);
  T carry = T(0);

  __device__ void add(T value) {
    const T y = value - carry;
    const T t = sum + y;
    carry = t - t == T(0) ? (t - sum) - y : T(0);  // t - t: 0 when t is finite, NaN otherwise
    sum = t;
  }
};

// *out = (sum of values [n]) / divisor, by one block in a fixed order: the
// last step of every reduced loss.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) sum_kernel(
    const acc_t* __restrict__ values, int64_t n, acc_t divisor, acc_t* __restrict__ out) {
  SPOOFLOSS_SHARED_ARRAY(acc_t, shared, kThreads / kWarp);
  CompensatedSum<acc_t> running;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) running.add(values[i]);
  acc_t total[1] = {running.sum};
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

// VEC consecutive elements of a row, as one 16-byte access when the kernel
// runs vectorized (address aligned, the row a whole number of packs), else
// element by element, with the `available` elements of a short last pack and
// zeros after them. Both read the same values into the same lanes, so a
// kernel's arithmetic, and its bits, do not depend on the alignment of its
// input.
template <typename T, int VEC, bool kVectorized>
__device__ inline Packed<T, VEC> load_pack(const T* address, int64_t available) {
  if constexpr (kVectorized) {
    return load_packed<T, VEC>(address);
  } else {
    Packed<T, VEC> out;
#pragma unroll
    for (int i = 0; i < VEC; ++i) out.values[i] = i < available ? address[i] : T(0);
    return out;
  }
}

template <typename T, int VEC, bool kVectorized>
__device__ inline void store_pack(T* address, const Packed<T, VEC>& packed, int64_t available) {
  if constexpr (kVectorized) {
    store_packed<T, VEC>(address, packed);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      if (i < available) address[i] = packed.values[i];
    }
  }
}

// Whether rows of `dim` elements at `data`, `stride` elements apart, can be
// read a pack at a time.
template <typename T>
inline bool rows_are_packed(const void* data, int64_t dim, int64_t stride_batch, int64_t stride_time) {
  constexpr int vec = packed_width<T>();
  return reinterpret_cast<uintptr_t>(data) % 16 == 0 && dim % vec == 0 && stride_batch % vec == 0 &&
      stride_time % vec == 0;
}

}  // namespace cuda
}  // namespace spoofloss
