// The sums behind the reduced losses ("mean", "sum") on the CPU.
#pragma once

#include <cstdint>

namespace spoofloss {
namespace cpu {

// Values added in index order in one run before the tree takes over.
constexpr int64_t kSumLeaf = 64;

// sum(values[0 .. n)) in float64, in an order fixed by n alone (so the result
// does not depend on the thread count): runs of kSumLeaf values added in index
// order, then the runs' sums added pairwise, halves split on run boundaries.
// The float64 accumulator puts the error of summing float32 values far below
// float32's rounding (a float32 running sum over B = 1M losses was 5e-4 off);
// the tree keeps float64 sums within O(log n) ulp.
template <typename T>
double fixed_order_sum(const T* values, int64_t n) {
  if (n <= kSumLeaf) {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += static_cast<double>(values[i]);
    return total;
  }
  const int64_t runs = (n + kSumLeaf - 1) / kSumLeaf;
  const int64_t half = (runs + 1) / 2 * kSumLeaf;
  return fixed_order_sum(values, half) + fixed_order_sum(values + half, n - half);
}

}  // namespace cpu
}  // namespace spoofloss
