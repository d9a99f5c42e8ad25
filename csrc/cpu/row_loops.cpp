// Builds row_loops_impl.h twice, baseline and AVX2, and picks one at run time.
#include "row_loops.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SPOOFLOSS_HAS_AVX2_BUILD 1
#endif

namespace spoofloss {
namespace cpu {
namespace {

#define SPOOFLOSS_ISA baseline
#include "row_loops_impl.h"
#undef SPOOFLOSS_ISA

void baseline_fill_rows(const float* row, int64_t rows, int64_t dim, float* out, bool /*streaming*/) {
  baseline::fill_rows_cached(row, rows, dim, out);
}

void no_fence() {}

#ifdef SPOOFLOSS_HAS_AVX2_BUILD
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")
#endif

#define SPOOFLOSS_ISA avx2
#include "row_loops_impl.h"
#undef SPOOFLOSS_ISA

// Streaming stores need 32-byte aligned rows: out aligned and dim a multiple
// of 8 floats. Otherwise, ordinary stores.
void avx2_fill_rows(const float* row, int64_t rows, int64_t dim, float* out, bool streaming) {
  const bool aligned = (reinterpret_cast<uintptr_t>(out) % 32 == 0) && (dim % 8 == 0);
  if (!streaming || !aligned) {
    avx2::fill_rows_cached(row, rows, dim, out);
    return;
  }
  for (int64_t t = 0; t < rows; ++t) {
    float* dst = out + t * dim;
    for (int64_t d = 0; d < dim; d += 8) _mm256_stream_ps(dst + d, _mm256_loadu_ps(row + d));
  }
}

void avx2_store_fence() {
  _mm_sfence();
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // SPOOFLOSS_HAS_AVX2_BUILD

RowLoops choose_row_loops() {
#ifdef SPOOFLOSS_HAS_AVX2_BUILD
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) {
    return RowLoops{&avx2::add_rows, &avx2_fill_rows, &avx2_store_fence, "avx2"};
  }
#endif
  return RowLoops{&baseline::add_rows, &baseline_fill_rows, &no_fence, "baseline"};
}

}  // namespace

const RowLoops& row_loops() {
  static const RowLoops chosen = choose_row_loops();
  return chosen;
}

}  // namespace cpu
}  // namespace spoofloss
