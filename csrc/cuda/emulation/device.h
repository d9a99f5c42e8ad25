// The kernel-side surface of the emulated CUDA device: what the kernels in
// csrc/cuda/*.cu use of CUDA, and nothing more, for the host C++ compiler.
//
// Every CUDA thread is a fiber of its own (emulator.cpp), so __syncthreads()
// and the warp shuffles really wait for the other threads; between two such
// points a thread runs alone, and the scheduler picks the next thread at
// random from a seeded generator. Errors a GPU would hang on or silently get
// wrong (a barrier not every thread reaches, a shuffle with a lane missing, a
// misaligned vector access, a launch over the hardware limits) stop the kernel
// and are reported by the next launch check, naming the kernel.
//
// Kernels include this through device_runtime.h, never directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "api.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
// __restrict__ is a GCC and Clang keyword already.

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

namespace spoofloss {
namespace emulation {

struct ThreadIndices {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};

// The running thread's indices. Out of line on purpose: after a barrier or a
// shuffle another fiber may have run, so nothing may be cached across them.
const ThreadIndices& current_thread();

// Block-wide barrier; file and line name it in reports.
void syncthreads(const char* file, int line);

// __shfl_down_sync on the bits of a value of at most 8 bytes.
uint64_t shuffle_down_bits(const char* file, int line, unsigned mask, uint64_t bits, unsigned delta, int width);

template <typename T>
T shfl_down_sync(const char* file, int line, unsigned mask, T value, unsigned delta, int width = 32) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>, "shuffle of a value over 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = shuffle_down_bits(file, line, mask, bits, delta, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// Shared memory of the running block. Each declaration gets its own
// allocation of exactly its size (so AddressSanitizer sees an overrun), filled
// with 0xff bytes (NaN in every floating type) when the block starts.
void* block_shared(const char* file, int line, size_t bytes, size_t alignment);
void* dynamic_shared();

template <typename T>
T* block_shared_array(const char* file, int line, size_t count) {
  return static_cast<T*>(block_shared(file, line, count * sizeof(T), alignof(T)));
}

// A misaligned vector access is an error on a GPU ("misaligned address");
// here it stops the kernel with a report.
void check_aligned(const void* address, size_t alignment, const char* what, const char* file, int line);

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t dynamic_shared_bytes;
  cudaStream_t stream;
};

// Runs body(args) once per thread of every block of the launch (or records why
// the launch is invalid). `pretty_name` is the __PRETTY_FUNCTION__ of the
// Launch below, which names the kernel instantiation.
void run_kernel(const LaunchConfig& config, const char* pretty_name, void (*body)(void*), void* args);

// `SPOOFLOSS_LAUNCH(grid, block, shared, stream, kernel)(args...)`, the
// emulated `kernel<<<grid, block, shared, stream>>>(args...)`.
template <auto Kernel>
class Launch {
 public:
  Launch(dim3 grid, dim3 block, size_t dynamic_shared_bytes, cudaStream_t stream)
      : config_{grid, block, dynamic_shared_bytes, stream} {}

  template <typename... Args>
  void operator()(Args&&... args) const {
    launch_with(Kernel, std::forward<Args>(args)...);
  }

 private:
  template <typename... Params, typename... Args>
  void launch_with(void (*)(Params...), Args&&... args) const {
    // The arguments converted once to the kernel's parameter types; every
    // thread then receives its own copy, as kernel parameters are on a GPU.
    using Bound = std::tuple<std::decay_t<Params>...>;
    Bound bound(std::forward<Args>(args)...);
    run_kernel(config_, name(), [](void* p) { std::apply(Kernel, *static_cast<Bound*>(p)); }, &bound);
  }

  static const char* name() {
    return __PRETTY_FUNCTION__;
  }

  LaunchConfig config_;
};

}  // namespace emulation
}  // namespace spoofloss

#define threadIdx (::spoofloss::emulation::current_thread().thread_idx)
#define blockIdx (::spoofloss::emulation::current_thread().block_idx)
#define blockDim (::spoofloss::emulation::current_thread().block_dim)
#define gridDim (::spoofloss::emulation::current_thread().grid_dim)
#define __syncthreads() ::spoofloss::emulation::syncthreads(__FILE__, __LINE__)
#define __shfl_down_sync(...) ::spoofloss::emulation::shfl_down_sync(__FILE__, __LINE__, __VA_ARGS__)
