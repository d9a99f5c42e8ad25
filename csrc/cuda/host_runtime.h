// What the host side of the CUDA ops (csrc/cuda/*_ops.cpp) needs of a device:
// the dispatch key its kernels register under, a device guard, the current
// stream, the largest grid and scratch allocation. On a CUDA build
// these are ATen's; on the emulated build (SPOOFLOSS_CUDA_EMULATION) the same
// host code registers for CPU tensors and runs the kernels on the emulated
// device, so the chunk, grid and scratch decisions are the ones a GPU gets.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/Device.h>

#include <limits>

#ifdef SPOOFLOSS_CUDA_EMULATION
#include "emulation/api.h"
#else
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

// TORCH_LIBRARY_IMPL(spoofloss, SPOOFLOSS_CUDA_DISPATCH_KEY, m)
#ifdef SPOOFLOSS_CUDA_EMULATION
#define SPOOFLOSS_CUDA_DISPATCH_KEY CPU
#else
#define SPOOFLOSS_CUDA_DISPATCH_KEY CUDA
#endif

namespace spoofloss {
namespace cuda {

#ifdef SPOOFLOSS_CUDA_EMULATION

// The emulated device is the host: nothing to switch to.
class DeviceGuard {
 public:
  explicit DeviceGuard(c10::Device) {}
};

inline cudaStream_t current_stream() {
  return nullptr;
}

inline int64_t max_grid_x() {
  return emulation::max_grid_x();
}

// Scratch the kernels write before they read it; poisoned here with NaN so
// that a read of anything never written shows, and counted.
inline at::Tensor empty_scratch(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor scratch = at::empty(sizes, options);
  if (scratch.is_floating_point()) scratch.fill_(std::numeric_limits<double>::quiet_NaN());
  emulation::count_scratch(static_cast<int64_t>(scratch.nbytes()));
  return scratch;
}

#else

using DeviceGuard = c10::cuda::CUDAGuard;

inline cudaStream_t current_stream() {
  return at::cuda::getCurrentCUDAStream();
}

inline int64_t max_grid_x() {
  return at::cuda::getCurrentDeviceProperties()->maxGridSize[0];
}

inline at::Tensor empty_scratch(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::empty(sizes, options);
}

#endif

}  // namespace cuda
}  // namespace spoofloss
