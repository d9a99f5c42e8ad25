// Body of the VectorLoops functions, included once per instruction set by
// vector_loops.cpp inside namespace SPOOFLOSS_ISA. No includes here: everything
// this file needs is included before the target pragma.

namespace SPOOFLOSS_ISA {

// Four rows per pass, so acc is loaded and stored a quarter as often; the
// pairing (r0 + r1) + (r2 + r3) is fixed, so every build rounds the same way.
void add_rows(const float* first, int64_t stride, int64_t rows, int64_t dim, float* __restrict acc) {
  int64_t t = 0;
  for (; t + 4 <= rows; t += 4) {
    const float* __restrict r0 = first + t * stride;
    const float* __restrict r1 = r0 + stride;
    const float* __restrict r2 = r1 + stride;
    const float* __restrict r3 = r2 + stride;
    for (int64_t d = 0; d < dim; ++d) acc[d] += (r0[d] + r1[d]) + (r2[d] + r3[d]);
  }
  for (; t < rows; ++t) {
    const float* __restrict r = first + t * stride;
    for (int64_t d = 0; d < dim; ++d) acc[d] += r[d];
  }
}

void fill_rows_cached(const float* __restrict row, int64_t rows, int64_t dim, float* __restrict out) {
  for (int64_t t = 0; t < rows; ++t) {
    float* __restrict dst = out + t * dim;
    for (int64_t d = 0; d < dim; ++d) dst[d] = row[d];
  }
}

}  // namespace SPOOFLOSS_ISA
