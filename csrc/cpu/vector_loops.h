// The CPU kernels' vector loops, compiled once per instruction set and picked
// at run time: over float32 rows, the sum of rows (pooling emb) and the fill of
// rows (emb's gradient, with streaming stores); over float32 logits, the
// softplus tail and the sigmoid of the binary cross-entropy.
//
// Why: the extension is built without -march flags, so that the library runs
// on any x86-64; left to itself the compiler then vectorises with SSE2 only.
// These loops are what the kernels' time goes to once the inputs are large, so
// they get an AVX2 build beside the baseline one, chosen once from what the
// CPU reports. Both builds add in the same order, so the row sums are bitwise
// the same; softplus and sigmoid agree to a few ulp.
#pragma once

#include <cstdint>

namespace spoofloss {
namespace cpu {

struct VectorLoops {
  // acc[d] += sum over t in [0, rows) of first[t * stride + d], d in [0, dim).
  void (*add_rows)(const float* first, int64_t stride, int64_t rows, int64_t dim, float* acc);
  // out[t * dim + d] = row[d] for t in [0, rows): out is contiguous [rows, dim].
  // `streaming` asks for stores that bypass the cache (when out is far larger
  // than the cache, they save reading every line before writing it); a build
  // may ignore the request.
  void (*fill_rows)(const float* row, int64_t rows, int64_t dim, float* out, bool streaming);
  // Orders streaming stores before what follows (no-op where none were made).
  void (*store_fence)();
  // out[i] = log(1 + exp(-|x[i]|)) (math::softplus_tail) and out[i] =
  // sigmoid(x[i]), i in [0, n): the transcendental parts of the binary loss
  // and of its gradient. The AVX2 build
  // evaluates exp and log with its own polynomials (Cephes' expf and logf,
  // within a few ulp of libm); the baseline calls scalar_math.h, i.e. libm.
  void (*softplus_tail_values)(const float* x, int64_t n, float* out);
  void (*sigmoid_values)(const float* x, int64_t n, float* out);
  const char* isa;  // "avx2" or "baseline"
};

// The fastest build this CPU supports, chosen on first use.
const VectorLoops& vector_loops();

}  // namespace cpu
}  // namespace spoofloss
