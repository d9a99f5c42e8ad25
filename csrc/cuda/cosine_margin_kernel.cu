// CUDA kernels of the cosine-margin op family (AM-softmax, OC-softmax, score).
//
// Forward, three launches on the current stream:
//   1. pool_chunks: grid (B, chunks). Each block sums a chunk of one
//      utterance's valid frames into a partial row [D] with 16-byte loads:
//      emb is read exactly once, and small batches still fill the GPU because
//      the time axis is split across blocks.
//   2. cosine_epilogue: one block per utterance adds its partial rows in
//      order, writes pooled [B, D] and runs the epilogue from math.h.
//   3. sum_kernel: one block sums the per-utterance losses (mean / sum).
// Backward, three launches:
//   1. backward_coefficients: one block per utterance recomputes the cosines
//      from pooled and writes the gradient row every valid frame receives.
//   2. broadcast_frames: grid (B, chunks) writes grad_emb once, zero on padding.
//   3. center_gradient: one thread per centre element sums over the batch in
//      index order (deterministic, no atomics).
// No host synchronisation anywhere: invalid labels or lengths, which the CPU
// kernels reject, cannot be reported without one here, so they turn that
// utterance's loss, score and gradients into NaN instead (never a silent
// wrong loss).
#include "../math.h"
#include "device_runtime.h"
#include "device_utils.cuh"
#include "launch.h"

namespace spoofloss {
namespace cuda {
namespace {

// Valid frame count of utterance b, or -1 for a length outside [1, T].
__device__ inline int64_t utterance_length(const CosineLayout& layout, int64_t b) {
  if (layout.lengths == nullptr) return layout.frames;
  return math::valid_length(
      math::load_as_double(layout.lengths, layout.lengths_dtype, b * layout.lengths_stride), layout.frames);
}

// Epilogue target of utterance b: the label's class (-1 if not 0/1) or the score's centre.
__device__ inline int64_t utterance_target(const CosineLayout& layout, int64_t b, int64_t score_target) {
  if (layout.label == nullptr) return score_target;
  return math::label_class(math::load_as_double(layout.label, layout.label_dtype, b * layout.label_stride));
}

// Threads of a block as a grid of `lanes` packed columns of D by `rows` frames.
struct BlockShape {
  int lanes;
  int rows;
  int lane;
  int row;
};

__device__ inline BlockShape block_shape(int64_t packs_per_row) {
  BlockShape s;
  s.lanes = static_cast<int>(packs_per_row < kThreads ? packs_per_row : kThreads);
  s.rows = kThreads / s.lanes;
  s.lane = threadIdx.x % s.lanes;
  s.row = threadIdx.x / s.lanes;
  return s;
}

// partial: [B, chunks, D]
template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kThreads) pool_chunks_kernel(
    const scalar_t* __restrict__ emb, const CosineLayout layout, int64_t frames_per_chunk, acc_t* __restrict__ partial) {
  SPOOFLOSS_DYNAMIC_SHARED(unsigned char, shared_bytes);
  acc_t* rows_sum = reinterpret_cast<acc_t*>(shared_bytes);  // [kThreads, VEC]
  const int64_t b = blockIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t length = utterance_length(layout, b);  // -1: read nothing, the epilogue writes NaN
  const int64_t t0 = chunk * frames_per_chunk;
  const int64_t t1 = length < t0 + frames_per_chunk ? length : t0 + frames_per_chunk;
  const int64_t packs = layout.dim / VEC;
  const BlockShape s = block_shape(packs);
  const scalar_t* first = emb + b * layout.emb_stride_batch;
  acc_t* out = partial + (b * gridDim.y + chunk) * layout.dim;

  for (int64_t p0 = 0; p0 < packs; p0 += s.lanes) {
    const int64_t p = p0 + s.lane;
    acc_t acc[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc[i] = acc_t(0);
    if (s.row < s.rows && p < packs) {
#pragma unroll 4
      for (int64_t t = t0 + s.row; t < t1; t += s.rows) {
        const auto x = load_packed<scalar_t, VEC>(first + t * layout.emb_stride_time + p * VEC);
#pragma unroll
        for (int i = 0; i < VEC; ++i) acc[i] += static_cast<acc_t>(x.values[i]);
      }
    }
    if (s.rows > 1) {
      // Fold the rows together in row order (deterministic).
#pragma unroll
      for (int i = 0; i < VEC; ++i) rows_sum[threadIdx.x * VEC + i] = acc[i];
      __syncthreads();
      if (s.row == 0) {
        for (int r = 1; r < s.rows; ++r) {
#pragma unroll
          for (int i = 0; i < VEC; ++i) acc[i] += rows_sum[(r * s.lanes + s.lane) * VEC + i];
        }
      }
      __syncthreads();
    }
    if (s.row == 0 && p < packs) {
#pragma unroll
      for (int i = 0; i < VEC; ++i) out[p * VEC + i] = acc[i];
    }
  }
}

// Per utterance: sum of squares of x, x . c_k and |c_k|^2, summed over D.
template <typename acc_t>
struct RowSums {
  static constexpr int kCount = 1 + 2 * kMaxCenters;
  acc_t v[kCount];
  __device__ acc_t& sum_sq() { return v[0]; }
  __device__ acc_t& dot(int k) { return v[1 + k]; }
  __device__ acc_t& center_sq(int k) { return v[1 + kMaxCenters + k]; }

  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < kCount; ++i) v[i] = acc_t(0);
  }

  // Adds feature d of the pooled row (x) and of the centres [C, D].
  __device__ void add(acc_t x, const acc_t* centers, int64_t d, int64_t dim, int num_centers) {
    sum_sq() += x * x;
    for (int k = 0; k < num_centers; ++k) {
      const acc_t ck = centers[k * dim + d];
      dot(k) += x * ck;
      center_sq(k) += ck * ck;
    }
  }
};

// Cosines from block-summed RowSums (thread 0 only).
template <typename acc_t>
__device__ inline acc_t cosines_from_sums(
    RowSums<acc_t>& sums, int num_centers, acc_t* cos, acc_t* inv_center_norm, bool* center_clamped, bool* clamped) {
  const acc_t inv_norm = math::inverse_norm(sums.sum_sq(), clamped);
  for (int k = 0; k < kMaxCenters; ++k) {
    cos[k] = acc_t(0);
    inv_center_norm[k] = acc_t(0);
    center_clamped[k] = false;
    if (k < num_centers) {
      inv_center_norm[k] = math::inverse_norm(sums.center_sq(k), &center_clamped[k]);
      cos[k] = sums.dot(k) * inv_norm * inv_center_norm[k];
    }
  }
  return inv_norm;
}

// loss_per_utterance may be null (the score op).
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) cosine_epilogue_kernel(
    const acc_t* __restrict__ partial, int64_t chunks, const acc_t* __restrict__ centers, const CosineLayout layout,
    Epilogue epilogue, const MarginParams<acc_t> params, int64_t score_center, acc_t* __restrict__ loss_per_utterance,
    acc_t* __restrict__ score, acc_t* __restrict__ pooled) {
  SPOOFLOSS_SHARED_ARRAY(acc_t, shared, kThreads / kWarp * RowSums<acc_t>::kCount);
  const int64_t b = blockIdx.x;
  const int64_t dim = layout.dim;
  const int num_centers = static_cast<int>(layout.num_centers);
  const int64_t length = utterance_length(layout, b);
  const acc_t inv_length = length > 0 ? acc_t(1) / static_cast<acc_t>(length) : math::quiet_nan<acc_t>();
  RowSums<acc_t> sums;
  sums.zero();
  for (int64_t d = threadIdx.x; d < dim; d += kThreads) {
    const acc_t* column = partial + b * chunks * dim + d;
    acc_t x = column[0];
    for (int64_t c = 1; c < chunks; ++c) x += column[c * dim];
    x *= inv_length;
    pooled[b * dim + d] = x;
    sums.add(x, centers, d, dim, num_centers);
  }
  block_sum(sums.v, shared);
  if (threadIdx.x == 0) {
    acc_t cos[kMaxCenters], inv_center_norm[kMaxCenters];
    bool center_clamped[kMaxCenters], clamped;
    cosines_from_sums(sums, num_centers, cos, inv_center_norm, center_clamped, &clamped);
    score[b] = cos[score_center];
    if (loss_per_utterance != nullptr) {
      // An invalid label makes the loss NaN, not the score.
      const int64_t target = utterance_target(layout, b, score_center);
      loss_per_utterance[b] = math::margin_epilogue(epilogue, cos, target, params).loss;
    }
  }
}

template <typename acc_t>
__global__ void __launch_bounds__(kThreads) backward_coefficients_kernel(
    const acc_t* __restrict__ grad_loss, const acc_t* __restrict__ pooled, const acc_t* __restrict__ centers,
    const CosineLayout layout, Epilogue epilogue, Reduction reduction, const MarginParams<acc_t> params,
    int64_t score_target, acc_t* __restrict__ frame_grad, acc_t* __restrict__ alpha, acc_t* __restrict__ g_cos) {
  SPOOFLOSS_SHARED_ARRAY(acc_t, shared, kThreads / kWarp * RowSums<acc_t>::kCount);
  SPOOFLOSS_SHARED_ARRAY(acc_t, coefficients, kMaxCenters + 1);  // alpha_k / L, beta / L
  const int64_t b = blockIdx.x;
  const int64_t dim = layout.dim;
  const int num_centers = static_cast<int>(layout.num_centers);
  const acc_t* x = pooled + b * dim;
  RowSums<acc_t> sums;
  sums.zero();
  for (int64_t d = threadIdx.x; d < dim; d += kThreads) sums.add(x[d], centers, d, dim, num_centers);
  block_sum(sums.v, shared);
  if (threadIdx.x == 0) {
    acc_t cos[kMaxCenters], inv_center_norm[kMaxCenters];
    bool center_clamped[kMaxCenters], clamped;
    const acc_t inv_norm = cosines_from_sums(sums, num_centers, cos, inv_center_norm, center_clamped, &clamped);
    const auto result = math::margin_epilogue(epilogue, cos, utterance_target(layout, b, score_target), params);
    const acc_t weight = math::reduction_weight(reduction, grad_loss, b, layout.batch);
    acc_t g[kMaxCenters];
    for (int k = 0; k < kMaxCenters; ++k) {
      g[k] = weight * result.dloss_dcos[k];
      g_cos[b * kMaxCenters + k] = k < num_centers ? g[k] * cos[k] : acc_t(0);
    }
    const auto coef = math::pooled_gradient(g, cos, inv_center_norm, inv_norm, clamped, num_centers);
    const int64_t length = utterance_length(layout, b);
    const acc_t inv_length = length > 0 ? acc_t(1) / static_cast<acc_t>(length) : math::quiet_nan<acc_t>();
    for (int k = 0; k < kMaxCenters; ++k) {
      alpha[b * kMaxCenters + k] = coef.alpha[k];
      coefficients[k] = coef.alpha[k] * inv_length;
    }
    coefficients[kMaxCenters] = coef.beta * inv_length;
  }
  __syncthreads();
  for (int64_t d = threadIdx.x; d < dim; d += kThreads) {
    acc_t v = coefficients[kMaxCenters] * x[d];
    for (int k = 0; k < num_centers; ++k) v += coefficients[k] * centers[k * dim + d];
    frame_grad[b * dim + d] = v;
  }
}

// grad_emb: contiguous [B, T, D]. An invalid length writes its NaN row on every frame.
template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kThreads) broadcast_frames_kernel(
    const acc_t* __restrict__ frame_grad, const CosineLayout layout, int64_t frames_per_chunk,
    scalar_t* __restrict__ grad_emb) {
  const int64_t b = blockIdx.x;
  const int64_t t0 = blockIdx.y * frames_per_chunk;
  const int64_t t_end = t0 + frames_per_chunk < layout.frames ? t0 + frames_per_chunk : layout.frames;
  const int64_t length = utterance_length(layout, b);
  const int64_t valid = length > 0 ? length : layout.frames;
  const int64_t dim = layout.dim;
  const int64_t packs = dim / VEC;
  const BlockShape s = block_shape(packs);
  if (s.row >= s.rows) return;  // no barrier below
  scalar_t* out = grad_emb + b * layout.frames * dim;
  for (int64_t p = s.lane; p < packs; p += s.lanes) {
    Packed<scalar_t, VEC> row, zero;
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      row.values[i] = static_cast<scalar_t>(frame_grad[b * dim + p * VEC + i]);
      zero.values[i] = scalar_t(0);
    }
#pragma unroll 4
    for (int64_t t = t0 + s.row; t < t_end; t += s.rows) {
      store_packed<scalar_t, VEC>(out + t * dim + p * VEC, t < valid ? row : zero);
    }
  }
}

// grad_centers [C, D] = sum_b alpha_bk x_b - (sum_b g_bk cos_bk) c_k / |c_k|^2.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) center_gradient_kernel(
    const acc_t* __restrict__ pooled, const acc_t* __restrict__ centers, const acc_t* __restrict__ alpha,
    const acc_t* __restrict__ g_cos, int64_t batch, int64_t dim, int64_t num_centers, acc_t* __restrict__ grad_centers) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (index >= num_centers * dim) return;
  const int64_t k = index / dim;
  const int64_t d = index % dim;
  const acc_t* center = centers + k * dim;
  acc_t center_sq = 0;
  for (int64_t j = 0; j < dim; ++j) center_sq += center[j] * center[j];
  bool clamped;
  const acc_t inv_center_norm = math::inverse_norm(center_sq, &clamped);
  acc_t radial = 0;
  acc_t along_x = 0;
  for (int64_t b = 0; b < batch; ++b) {
    radial += g_cos[b * kMaxCenters + k];
    along_x += alpha[b * kMaxCenters + k] * pooled[b * dim + d];
  }
  const acc_t radial_scale = clamped ? acc_t(0) : -radial * inv_center_norm * inv_center_norm;
  grad_centers[index] = along_x + radial_scale * center[d];
}

// 16-byte accesses when D, the strides and the pointer allow them; else scalar.
template <typename scalar_t>
bool can_pack(const void* data, int64_t dim, int64_t stride_batch, int64_t stride_time) {
  constexpr int vec = packed_width<scalar_t>();
  return reinterpret_cast<uintptr_t>(data) % 16 == 0 && dim % vec == 0 && stride_batch % vec == 0 &&
      stride_time % vec == 0;
}

}  // namespace

template <typename scalar_t>
void launch_cosine_forward(
    const scalar_t* emb, const acc_of<scalar_t>* centers, const CosineLayout& layout, Epilogue epilogue,
    const MarginParams<acc_of<scalar_t>>& params, int64_t score_center, int64_t chunks, acc_of<scalar_t>* partial,
    acc_of<scalar_t>* loss_per_utterance, acc_of<scalar_t>* score, acc_of<scalar_t>* pooled, cudaStream_t stream) {
  using acc_t = acc_of<scalar_t>;
  constexpr int vec = packed_width<scalar_t>();
  const int64_t frames_per_chunk = ceil_div(layout.frames, chunks);
  const dim3 grid(static_cast<unsigned>(layout.batch), static_cast<unsigned>(chunks));
  if (can_pack<scalar_t>(emb, layout.dim, layout.emb_stride_batch, layout.emb_stride_time)) {
    SPOOFLOSS_LAUNCH(grid, kThreads, kThreads * vec * sizeof(acc_t), stream, pool_chunks_kernel<scalar_t, acc_t, vec>)(
        emb, layout, frames_per_chunk, partial);
  } else {
    SPOOFLOSS_LAUNCH(grid, kThreads, kThreads * sizeof(acc_t), stream, pool_chunks_kernel<scalar_t, acc_t, 1>)(
        emb, layout, frames_per_chunk, partial);
  }
  SPOOFLOSS_LAUNCH_CHECK();
  SPOOFLOSS_LAUNCH(static_cast<unsigned>(layout.batch), kThreads, 0, stream, cosine_epilogue_kernel<acc_t>)(
      partial, chunks, centers, layout, epilogue, params, score_center, loss_per_utterance, score, pooled);
  SPOOFLOSS_LAUNCH_CHECK();
}

template <typename acc_t>
void launch_reduce_loss(const acc_t* values, int64_t n, bool mean, acc_t* loss, cudaStream_t stream) {
  SPOOFLOSS_LAUNCH(1, kThreads, 0, stream, sum_kernel<acc_t>)(
      values, n, mean ? static_cast<acc_t>(n) : acc_t(1), loss);
  SPOOFLOSS_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_cosine_backward(
    const acc_of<scalar_t>* grad_loss, const acc_of<scalar_t>* pooled, const acc_of<scalar_t>* centers,
    const CosineLayout& layout, Epilogue epilogue, Reduction reduction, const MarginParams<acc_of<scalar_t>>& params,
    int64_t score_target, int64_t chunks, acc_of<scalar_t>* frame_grad, acc_of<scalar_t>* alpha,
    acc_of<scalar_t>* g_cos, scalar_t* grad_emb, acc_of<scalar_t>* grad_centers, cudaStream_t stream) {
  using acc_t = acc_of<scalar_t>;
  constexpr int vec = packed_width<scalar_t>();
  SPOOFLOSS_LAUNCH(static_cast<unsigned>(layout.batch), kThreads, 0, stream, backward_coefficients_kernel<acc_t>)(
      grad_loss, pooled, centers, layout, epilogue, reduction, params, score_target, frame_grad, alpha, g_cos);
  SPOOFLOSS_LAUNCH_CHECK();
  const int64_t frames_per_chunk = ceil_div(layout.frames, chunks);
  const dim3 grid(static_cast<unsigned>(layout.batch), static_cast<unsigned>(chunks));
  if (can_pack<scalar_t>(grad_emb, layout.dim, layout.emb_stride_batch, layout.emb_stride_time)) {
    SPOOFLOSS_LAUNCH(grid, kThreads, 0, stream, broadcast_frames_kernel<scalar_t, acc_t, vec>)(
        frame_grad, layout, frames_per_chunk, grad_emb);
  } else {
    SPOOFLOSS_LAUNCH(grid, kThreads, 0, stream, broadcast_frames_kernel<scalar_t, acc_t, 1>)(
        frame_grad, layout, frames_per_chunk, grad_emb);
  }
  SPOOFLOSS_LAUNCH_CHECK();
  const int64_t elements = layout.num_centers * layout.dim;
  const unsigned center_blocks = static_cast<unsigned>(ceil_div(elements, kThreads));
  SPOOFLOSS_LAUNCH(center_blocks, kThreads, 0, stream, center_gradient_kernel<acc_t>)(
      pooled, centers, alpha, g_cos, layout.batch, layout.dim, layout.num_centers, grad_centers);
  SPOOFLOSS_LAUNCH_CHECK();
}

#define SPOOFLOSS_INSTANTIATE_COSINE(scalar_t)                                                                     \
  template void launch_cosine_forward<scalar_t>(                                                                   \
      const scalar_t*, const acc_of<scalar_t>*, const CosineLayout&, Epilogue, const MarginParams<acc_of<scalar_t>>&, \
      int64_t, int64_t, acc_of<scalar_t>*, acc_of<scalar_t>*, acc_of<scalar_t>*, acc_of<scalar_t>*,                  \
      cudaStream_t);                                                                                               \
  template void launch_cosine_backward<scalar_t>(                                                                  \
      const acc_of<scalar_t>*, const acc_of<scalar_t>*, const acc_of<scalar_t>*, const CosineLayout&, Epilogue,      \
      Reduction, const MarginParams<acc_of<scalar_t>>&, int64_t, int64_t, acc_of<scalar_t>*, acc_of<scalar_t>*,      \
      acc_of<scalar_t>*, scalar_t*, acc_of<scalar_t>*, cudaStream_t);
SPOOFLOSS_INSTANTIATE_FOR_INPUT_TYPES(SPOOFLOSS_INSTANTIATE_COSINE)
#undef SPOOFLOSS_INSTANTIATE_COSINE

template void launch_reduce_loss<float>(const float*, int64_t, bool, float*, cudaStream_t);
template void launch_reduce_loss<double>(const double*, int64_t, bool, double*, cudaStream_t);

}  // namespace cuda
}  // namespace spoofloss
