// What a kernel file (csrc/cuda/*.cu) includes instead of <cuda_runtime.h>:
// the CUDA runtime under nvcc, or the emulated device (emulation/device.h)
// when the same source is compiled by the host compiler for the emulated
// build (SPOOFLOSS_CUDA_EMULATION). The few spellings that differ between the
// two are these macros; under nvcc each expands to exactly the CUDA construct
// it names, so the GPU code is what it would be without them.
//
//   SPOOFLOSS_LAUNCH(grid, block, shared_bytes, stream, kernel<...>)(args...)
//       kernel<...><<<grid, block, shared_bytes, stream>>>(args...)
//   SPOOFLOSS_SHARED_ARRAY(type, name, count)   __shared__ type name[count]
//   SPOOFLOSS_DYNAMIC_SHARED(type, name)        extern __shared__ type name[]
//   SPOOFLOSS_CHECK_ALIGNED(pointer, bytes, what)  (nothing on a GPU)
//   SPOOFLOSS_LAUNCH_CHECK()                    C10_CUDA_KERNEL_LAUNCH_CHECK()
#pragma once

#ifdef SPOOFLOSS_CUDA_EMULATION

#include <c10/util/Exception.h>

#include "emulation/device.h"

#define SPOOFLOSS_LAUNCH(grid, block, shared_bytes, stream, ...) \
  ::spoofloss::emulation::Launch<&__VA_ARGS__>(grid, block, shared_bytes, stream)
#define SPOOFLOSS_SHARED_ARRAY(type, name, count) \
  type* const name = ::spoofloss::emulation::block_shared_array<type>(__FILE__, __LINE__, count)
#define SPOOFLOSS_DYNAMIC_SHARED(type, name) \
  type* const name = static_cast<type*>(::spoofloss::emulation::dynamic_shared())
#define SPOOFLOSS_CHECK_ALIGNED(pointer, bytes, what) \
  ::spoofloss::emulation::check_aligned(pointer, bytes, what, __FILE__, __LINE__)
#define SPOOFLOSS_LAUNCH_CHECK() ::spoofloss::emulation::check_last_launch()

#else

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#define SPOOFLOSS_LAUNCH(grid, block, shared_bytes, stream, ...) __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#define SPOOFLOSS_SHARED_ARRAY(type, name, count) __shared__ type name[count]
#define SPOOFLOSS_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#define SPOOFLOSS_CHECK_ALIGNED(pointer, bytes, what) ((void)0)
#define SPOOFLOSS_LAUNCH_CHECK() C10_CUDA_KERNEL_LAUNCH_CHECK()

#endif
