// How finely the CPU kernels split their work across threads.
#pragma once

#include <algorithm>
#include <cstdint>

namespace spoofloss {

// Elements below which a loop is not worth an OpenMP region (ATen's own
// elementwise grain, at::internal::GRAIN_SIZE, lives in a heavy header).
constexpr int64_t kParallelGrain = 32768;

// How many work items of `elements_per_item` elements each a thread takes at
// least: below kParallelGrain elements in all, at::parallel_for runs inline.
inline int64_t grain(int64_t elements_per_item) {
  return std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, elements_per_item));
}

}  // namespace spoofloss
