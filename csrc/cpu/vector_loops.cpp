// Builds vector_loops_impl.h twice, baseline and AVX2, and picks one at run time.
#include "vector_loops.h"

#include "../scalar_math.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SPOOFLOSS_HAS_AVX2_BUILD 1
#endif

namespace spoofloss {
namespace cpu {
namespace {

#define SPOOFLOSS_ISA baseline
#include "vector_loops_impl.h"
#undef SPOOFLOSS_ISA

void baseline_fill_rows(const float* row, int64_t rows, int64_t dim, float* out, bool /*streaming*/) {
  baseline::fill_rows_cached(row, rows, dim, out);
}

void no_fence() {}

void baseline_softplus_tail_values(const float* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = math::softplus_tail(x[i]);
}

void baseline_sigmoid_values(const float* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = math::sigmoid(x[i]);
}

#ifdef SPOOFLOSS_HAS_AVX2_BUILD
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")
#endif

#define SPOOFLOSS_ISA avx2
#include "vector_loops_impl.h"
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

// exp(x) for x <= 0 (Cephes expf): x = n ln2 + r, |r| <= ln2 / 2, exp(r) by a
// degree-7 polynomial, 2^n put in the exponent bits. Below -87.3 the result
// would be subnormal: 0 instead.
__m256 exp_nonpositive(__m256 x) {
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  const __m256 n = _mm256_round_ps(
      _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)));
  r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(-2.12194440e-4f)));
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 result = _mm256_mul_ps(p, _mm256_castsi256_ps(exponent));
  return _mm256_andnot_ps(underflow, result);
}

// log(u) for u in [1, 2] (Cephes logf): u = 2^k m with m in [sqrt(1/2), sqrt(2)),
// log(m) = t - t^2 / 2 + t^3 P(t) for t = m - 1.
__m256 log_one_to_two(__m256 u) {
  const __m256 high = _mm256_cmp_ps(u, _mm256_set1_ps(1.41421356237f), _CMP_GT_OQ);
  const __m256 k = _mm256_and_ps(high, _mm256_set1_ps(1.0f));
  const __m256 m = _mm256_blendv_ps(u, _mm256_mul_ps(u, _mm256_set1_ps(0.5f)), high);
  const __m256 t = _mm256_sub_ps(m, _mm256_set1_ps(1.0f));
  const __m256 t2 = _mm256_mul_ps(t, t);
  __m256 p = _mm256_set1_ps(7.0376836292e-2f);
  p = _mm256_add_ps(_mm256_mul_ps(p, t), _mm256_set1_ps(-1.1514610310e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, t), _mm256_set1_ps(1.1676998740e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, t), _mm256_set1_ps(-1.2420140846e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, t), _mm256_set1_ps(1.4249322787e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, t), _mm256_set1_ps(-1.6668057665e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, t), _mm256_set1_ps(2.0000714765e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, t), _mm256_set1_ps(-2.4999993993e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, t), _mm256_set1_ps(3.3333331174e-1f));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, t), t2);
  y = _mm256_add_ps(y, _mm256_mul_ps(k, _mm256_set1_ps(-2.12194440e-4f)));
  y = _mm256_sub_ps(y, _mm256_mul_ps(t2, _mm256_set1_ps(0.5f)));
  return _mm256_add_ps(_mm256_add_ps(t, y), _mm256_mul_ps(k, _mm256_set1_ps(0.693359375f)));
}

__m256 abs_ps(__m256 x) {
  return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
}

// log1p(exp(-|x|)), log1p by Goldberg's correction as in math::log1p_unit; NaN
// stays NaN.
__m256 softplus_tail8(__m256 x) {
  const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_setzero_ps(), abs_ps(x)));
  const __m256 u = _mm256_add_ps(_mm256_set1_ps(1.0f), e);
  const __m256 corrected = _mm256_mul_ps(log_one_to_two(u), _mm256_div_ps(e, _mm256_sub_ps(u, _mm256_set1_ps(1.0f))));
  const __m256 value = _mm256_blendv_ps(corrected, e, _mm256_cmp_ps(u, _mm256_set1_ps(1.0f), _CMP_EQ_OQ));
  return _mm256_blendv_ps(value, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

// sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) below, e = exp(-|x|).
__m256 sigmoid8(__m256 x) {
  const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_setzero_ps(), abs_ps(x)));
  const __m256 numerator = _mm256_blendv_ps(_mm256_set1_ps(1.0f), e, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
  const __m256 value = _mm256_div_ps(numerator, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
  return _mm256_blendv_ps(value, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

void avx2_softplus_tail_values(const float* x, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, softplus_tail8(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) out[i] = math::softplus_tail(x[i]);
}

void avx2_sigmoid_values(const float* x, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, sigmoid8(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) out[i] = math::sigmoid(x[i]);
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // SPOOFLOSS_HAS_AVX2_BUILD

VectorLoops choose_vector_loops() {
#ifdef SPOOFLOSS_HAS_AVX2_BUILD
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) {
    return VectorLoops{
        &avx2::add_rows, &avx2_fill_rows, &avx2_store_fence, &avx2_softplus_tail_values, &avx2_sigmoid_values, "avx2"};
  }
#endif
  return VectorLoops{
      &baseline::add_rows, &baseline_fill_rows, &no_fence, &baseline_softplus_tail_values, &baseline_sigmoid_values,
      "baseline"};
}

}  // namespace

const VectorLoops& vector_loops() {
  static const VectorLoops chosen = choose_vector_loops();
  return chosen;
}

}  // namespace cpu
}  // namespace spoofloss
