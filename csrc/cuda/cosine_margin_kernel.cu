// CUDA kernels of the cosine-margin op family (AM-softmax, OC-softmax, score).
//
// Forward, on the current stream:
//   1. center_norms: |c_k|^2 of the C centres, once for every utterance.
//   2. pool_chunks: grid (utterance blocks, chunks). Each block sums a chunk of
//      one utterance's valid frames into a partial row [D] with 16-byte loads:
//      emb is read exactly once, and small batches still fill the GPU because
//      the time axis is split across blocks.
//   3. cosine_epilogue: one block per utterance adds its partial rows in
//      order, writes pooled [B, D], forms the cosines with the centres and runs
//      the epilogue from scalar_math.h.
//   4. sum_kernel: one block sums the per-utterance losses (mean / sum).
// Backward:
//   1. center_norms again.
//   2. backward_coefficients: one block per utterance recomputes the cosines
//      from pooled and writes the gradient row every valid frame receives.
//   3. broadcast_frames: grid (utterance blocks, chunks) writes grad_emb once.
//   4. center_gradient_partials: grid (D / 32, C, batch segments) sums
//      alpha_bk x_b over one segment of the batch.
//   5. center_gradient_finish: the segments added in order, plus the radial
//      term of each centre. No atomics: the same bits on every run.
// The geometry (launch.h, plan_cosine) depends on the shapes alone, and an
// unaligned emb is read in the same order as an aligned one, so a given input
// gives the same bits on every GPU. Per-utterance kernels loop over the batch
// when it exceeds their grid.
//
// No host synchronisation anywhere: invalid labels or lengths, which the CPU
// kernels reject, cannot be reported without one here, so they turn that
// utterance's loss, score and gradients into NaN instead (never a silent
// wrong loss).
#include "../cosine_losses.h"
#include "../scalar_math.h"
#include "device_runtime.h"
#include "device_utils.cuh"
#include "launch.h"

namespace spoofloss {
namespace cuda {
namespace {

// Centres whose dot products one block reduction carries.
constexpr int kCenterTile = 4;

// Valid frame count of utterance b, or -1 for a length outside [1, T].
__device__ inline int64_t utterance_length(const CosineLayout& layout, int64_t b) {
  if (layout.lengths == nullptr) return layout.frames;
  return math::valid_length(
      math::load_as_double(layout.lengths, layout.lengths_dtype, b * layout.lengths_stride), layout.frames);
}

// Threads of a block as a grid of `lanes` packs of D by `rows` frames.
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

// center_sq [C]: grid (C).
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) center_norms_kernel(
    const acc_t* __restrict__ centers, int64_t dim, acc_t* __restrict__ center_sq) {
  SPOOFLOSS_SHARED_ARRAY(acc_t, shared, kThreads / kWarp);
  const acc_t* center = centers + static_cast<int64_t>(blockIdx.x) * dim;
  acc_t sum[1] = {acc_t(0)};
  for (int64_t d = threadIdx.x; d < dim; d += kThreads) sum[0] += center[d] * center[d];
  block_sum(sum, shared);
  if (threadIdx.x == 0) center_sq[blockIdx.x] = sum[0];
}

// partial: [B, chunks, D]. VEC consecutive features per thread, loaded as one
// pack when kVectorized, else one by one (same order either way).
template <typename scalar_t, typename acc_t, bool kVectorized>
__global__ void __launch_bounds__(kThreads) pool_chunks_kernel(
    const scalar_t* __restrict__ emb, const CosineLayout layout, int64_t frames_per_chunk, acc_t* __restrict__ partial) {
  constexpr int VEC = packed_width<scalar_t>();
  SPOOFLOSS_DYNAMIC_SHARED(unsigned char, shared_bytes);
  acc_t* rows_sum = reinterpret_cast<acc_t*>(shared_bytes);  // [kThreads, VEC]
  const int64_t dim = layout.dim;
  const int64_t chunk = blockIdx.y;
  const int64_t packs = ceil_div(dim, VEC);
  const BlockShape s = block_shape(packs);
  for (int64_t b = blockIdx.x; b < layout.batch; b += gridDim.x) {
    const int64_t length = utterance_length(layout, b);  // -1: read nothing, the epilogue writes NaN
    const int64_t t0 = chunk * frames_per_chunk;
    const int64_t t1 = length < t0 + frames_per_chunk ? length : t0 + frames_per_chunk;
    const scalar_t* first = emb + b * layout.emb_stride_batch;
    acc_t* out = partial + (b * gridDim.y + chunk) * dim;
    for (int64_t p0 = 0; p0 < packs; p0 += s.lanes) {
      const int64_t p = p0 + s.lane;
      acc_t acc[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) acc[i] = acc_t(0);
      if (s.row < s.rows && p < packs) {
#pragma unroll 4
        for (int64_t t = t0 + s.row; t < t1; t += s.rows) {
          const auto x = load_pack<scalar_t, VEC, kVectorized>(first + t * layout.emb_stride_time + p * VEC, dim - p * VEC);
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
        for (int i = 0; i < VEC; ++i) {
          if (p * VEC + i < dim) out[p * VEC + i] = acc[i];
        }
      }
    }
  }
}

// The cosines of one pooled row x [D] with the C centres, into cos [C]
// (shared), kCenterTile centres per block reduction; returns, in thread 0,
// 1 / |x| and whether |x| was clamped. Every thread reads only the elements of
// x it wrote itself (d = threadIdx.x + i * kThreads), and cos is complete in
// every thread on return.
template <typename acc_t>
__device__ inline acc_t row_cosines(
    const acc_t* x, const acc_t* centers, const acc_t* center_sq, int64_t dim, int num_centers, acc_t* shared,
    acc_t* cos, bool* clamped) {
  acc_t inv_norm = acc_t(0);
  for (int k0 = 0; k0 < num_centers; k0 += kCenterTile) {
    acc_t sums[1 + kCenterTile];  // |x|^2 (first tile), then x . c_k
#pragma unroll
    for (int j = 0; j <= kCenterTile; ++j) sums[j] = acc_t(0);
    for (int64_t d = threadIdx.x; d < dim; d += kThreads) {
      const acc_t xd = x[d];
      if (k0 == 0) sums[0] += xd * xd;
#pragma unroll
      for (int j = 0; j < kCenterTile; ++j) {
        if (k0 + j < num_centers) sums[1 + j] += xd * centers[(k0 + j) * dim + d];
      }
    }
    block_sum(sums, shared);
    if (threadIdx.x == 0) {
      if (k0 == 0) inv_norm = math::inverse_norm(sums[0], clamped);
      for (int j = 0; j < kCenterTile && k0 + j < num_centers; ++j) {
        bool center_clamped;
        cos[k0 + j] = sums[1 + j] * inv_norm * math::inverse_norm(center_sq[k0 + j], &center_clamped);
      }
    }
  }
  __syncthreads();
  return inv_norm;
}

// loss_per_utterance may be null (the score op). Dynamic shared memory: cos [C].
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) cosine_epilogue_kernel(
    const acc_t* __restrict__ partial, int64_t chunks, const acc_t* __restrict__ centers,
    const acc_t* __restrict__ center_sq, const CosineLayout layout, const CosineEpilogue<acc_t> epilogue,
    acc_t* __restrict__ loss_per_utterance, acc_t* __restrict__ score, acc_t* __restrict__ pooled) {
  SPOOFLOSS_SHARED_ARRAY(acc_t, shared, kThreads / kWarp * (1 + kCenterTile));
  SPOOFLOSS_DYNAMIC_SHARED(unsigned char, shared_bytes);
  acc_t* cos = reinterpret_cast<acc_t*>(shared_bytes);  // [C]
  const int64_t dim = layout.dim;
  const int64_t num_centers = layout.num_centers;
  const auto kind = static_cast<LossKind>(epilogue.loss);
  for (int64_t b = blockIdx.x; b < layout.batch; b += gridDim.x) {
    const int64_t length = utterance_length(layout, b);
    const acc_t inv_length = length > 0 ? acc_t(1) / static_cast<acc_t>(length) : math::quiet_nan<acc_t>();
    acc_t* x = pooled + b * dim;
    for (int64_t d = threadIdx.x; d < dim; d += kThreads) {
      const acc_t* column = partial + b * chunks * dim + d;
      acc_t sum = column[0];
      for (int64_t c = 1; c < chunks; ++c) sum += column[c * dim];
      x[d] = sum * inv_length;
    }
    bool clamped;
    row_cosines(x, centers, center_sq, dim, num_centers, shared, cos, &clamped);
    if (threadIdx.x == 0) {
      // An invalid label makes the loss NaN, not the score.
      const UtteranceTarget target = math::read_target(layout, b);
      score[b] = math::utterance_score<acc_t>(epilogue, cos, num_centers, target, acc_t(0), nullptr);
      if (loss_per_utterance != nullptr) {
        loss_per_utterance[b] =
            math::cosine_loss<acc_t>(kind, cos, num_centers, target, epilogue.params, acc_t(0), nullptr);
      }
    }
    __syncthreads();  // thread 0 reads cos before the next utterance overwrites it
  }
}

// frame_grad [B, D]: d (loss, score) / d pooled_b / L_b, what every valid frame
// of utterance b receives; alpha and g_cos [B, C] for the centre gradient.
// grad_loss and grad_score may each be null. Dynamic shared memory: cos [C],
// g [C] and the coefficients alpha_k / L (k < C) and beta / L.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) backward_coefficients_kernel(
    const acc_t* __restrict__ grad_loss, const acc_t* __restrict__ grad_score, const acc_t* __restrict__ pooled,
    const acc_t* __restrict__ centers, const acc_t* __restrict__ center_sq, const CosineLayout layout,
    const CosineEpilogue<acc_t> epilogue, Reduction reduction, acc_t* __restrict__ frame_grad,
    acc_t* __restrict__ alpha, acc_t* __restrict__ g_cos) {
  SPOOFLOSS_SHARED_ARRAY(acc_t, shared, kThreads / kWarp * (1 + kCenterTile));
  SPOOFLOSS_DYNAMIC_SHARED(unsigned char, shared_bytes);
  const int64_t num_centers = layout.num_centers;
  acc_t* cos = reinterpret_cast<acc_t*>(shared_bytes);  // [C]
  acc_t* g = cos + num_centers;                         // [C]
  acc_t* coefficients = g + num_centers;                // [C + 1]
  const int64_t dim = layout.dim;
  const auto kind = static_cast<LossKind>(epilogue.loss);
  for (int64_t b = blockIdx.x; b < layout.batch; b += gridDim.x) {
    const acc_t* x = pooled + b * dim;
    bool clamped;
    const acc_t inv_norm = row_cosines(x, centers, center_sq, dim, num_centers, shared, cos, &clamped);
    if (threadIdx.x == 0) {
      const UtteranceTarget target = math::read_target(layout, b);
      for (int64_t k = 0; k < num_centers; ++k) g[k] = acc_t(0);
      if (grad_loss != nullptr) {
        const acc_t weight = math::reduction_weight(reduction, grad_loss, b, layout.batch);
        math::cosine_loss<acc_t>(kind, cos, num_centers, target, epilogue.params, weight, g);
      }
      if (grad_score != nullptr) {
        math::utterance_score<acc_t>(epilogue, cos, num_centers, target, grad_score[b], g);
      }
      acc_t* alpha_b = alpha + b * num_centers;
      const acc_t beta = math::pooled_gradient(g, cos, center_sq, inv_norm, clamped, num_centers, alpha_b);
      const int64_t length = utterance_length(layout, b);
      const acc_t inv_length = length > 0 ? acc_t(1) / static_cast<acc_t>(length) : math::quiet_nan<acc_t>();
      for (int64_t k = 0; k < num_centers; ++k) {
        g_cos[b * num_centers + k] = g[k] * cos[k];
        coefficients[k] = alpha_b[k] * inv_length;
      }
      coefficients[num_centers] = beta * inv_length;
    }
    __syncthreads();
    for (int64_t d = threadIdx.x; d < dim; d += kThreads) {
      acc_t v = coefficients[num_centers] * x[d];
      for (int64_t k = 0; k < num_centers; ++k) v += coefficients[k] * centers[k * dim + d];
      frame_grad[b * dim + d] = v;
    }
    __syncthreads();  // coefficients are rewritten for the next utterance
  }
}

// grad_emb: contiguous [B, T, D]. An invalid length writes its NaN row on every frame.
template <typename scalar_t, typename acc_t, bool kVectorized>
__global__ void __launch_bounds__(kThreads) broadcast_frames_kernel(
    const acc_t* __restrict__ frame_grad, const CosineLayout layout, int64_t frames_per_chunk,
    scalar_t* __restrict__ grad_emb) {
  constexpr int VEC = packed_width<scalar_t>();
  const int64_t dim = layout.dim;
  const int64_t packs = ceil_div(dim, VEC);
  const BlockShape s = block_shape(packs);
  if (s.row >= s.rows) return;  // no barrier below
  const int64_t t0 = blockIdx.y * frames_per_chunk;
  const int64_t t_end = t0 + frames_per_chunk < layout.frames ? t0 + frames_per_chunk : layout.frames;
  for (int64_t b = blockIdx.x; b < layout.batch; b += gridDim.x) {
    const int64_t length = utterance_length(layout, b);
    const int64_t valid = length > 0 ? length : layout.frames;
    scalar_t* out = grad_emb + b * layout.frames * dim;
    for (int64_t p = s.lane; p < packs; p += s.lanes) {
      Packed<scalar_t, VEC> row, zero;
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const int64_t d = p * VEC + i;
        row.values[i] = static_cast<scalar_t>(d < dim ? frame_grad[b * dim + d] : acc_t(0));
        zero.values[i] = scalar_t(0);
      }
#pragma unroll 4
      for (int64_t t = t0 + s.row; t < t_end; t += s.rows) {
        store_pack<scalar_t, VEC, kVectorized>(out + t * dim + p * VEC, t < valid ? row : zero, dim - p * VEC);
      }
    }
  }
}

// Columns of D a centre-gradient block covers, and the batch rows it splits
// its segment into.
constexpr int kCenterColumns = 32;
constexpr int kCenterRows = kThreads / kCenterColumns;

// center_partials [S, C, D]: sum over the utterances b of segment s of
// alpha_bk x_b[d]. grid (ceil(D / 32), C, S).
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) center_gradient_partials_kernel(
    const acc_t* __restrict__ pooled, const acc_t* __restrict__ alpha, int64_t batch, int64_t dim, int64_t num_centers,
    int64_t segment_length, acc_t* __restrict__ center_partials) {
  SPOOFLOSS_SHARED_ARRAY(acc_t, rows, kThreads);
  const int column = threadIdx.x % kCenterColumns;
  const int row = threadIdx.x / kCenterColumns;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kCenterColumns + column;
  const int64_t k = blockIdx.y;
  const int64_t segment = blockIdx.z;
  const int64_t b0 = segment * segment_length;
  const int64_t b1 = b0 + segment_length < batch ? b0 + segment_length : batch;
  acc_t sum = acc_t(0);
  if (d < dim) {
    for (int64_t b = b0 + row; b < b1; b += kCenterRows) sum += alpha[b * num_centers + k] * pooled[b * dim + d];
  }
  rows[threadIdx.x] = sum;
  __syncthreads();
  if (row == 0 && d < dim) {
    for (int r = 1; r < kCenterRows; ++r) sum += rows[r * kCenterColumns + column];  // in row order
    center_partials[(segment * num_centers + k) * dim + d] = sum;
  }
}

// grad_centers [C, D] = sum over segments (in order) of center_partials,
// - (sum_b g_bk cos_bk) c_k / |c_k|^2. grid (ceil(D / 256), C).
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) center_gradient_finish_kernel(
    const acc_t* __restrict__ center_partials, int64_t segments, const acc_t* __restrict__ g_cos,
    const acc_t* __restrict__ centers, const acc_t* __restrict__ center_sq, int64_t batch, int64_t dim,
    int64_t num_centers, acc_t* __restrict__ grad_centers) {
  SPOOFLOSS_SHARED_ARRAY(acc_t, shared, kThreads / kWarp);
  SPOOFLOSS_SHARED_ARRAY(acc_t, radial_scale, 1);
  const int64_t k = blockIdx.y;
  // The same sum in every block of centre k: each computes it rather than wait for another.
  CompensatedSum<acc_t> running;
  for (int64_t b = threadIdx.x; b < batch; b += kThreads) running.add(g_cos[b * num_centers + k]);
  acc_t radial[1] = {running.sum};
  block_sum(radial, shared);
  if (threadIdx.x == 0) radial_scale[0] = math::radial_scale(radial[0], center_sq[k]);
  __syncthreads();
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (d < dim) {
    acc_t sum = center_partials[k * dim + d];
    for (int64_t s = 1; s < segments; ++s) sum += center_partials[(s * num_centers + k) * dim + d];
    grad_centers[k * dim + d] = sum + radial_scale[0] * centers[k * dim + d];
  }
}

template <typename acc_t>
void launch_center_norms(const acc_t* centers, const CosineLayout& layout, acc_t* center_sq, cudaStream_t stream) {
  SPOOFLOSS_LAUNCH(static_cast<unsigned>(layout.num_centers), kThreads, 0, stream, center_norms_kernel<acc_t>)(
      centers, layout.dim, center_sq);
  SPOOFLOSS_LAUNCH_CHECK();
}

}  // namespace

template <typename scalar_t>
void launch_cosine_forward(
    const scalar_t* emb, const acc_of<scalar_t>* centers, const CosineLayout& layout,
    const CosineEpilogue<acc_of<scalar_t>>& epilogue, const CosinePlan& plan,
    const CosineForwardScratch<acc_of<scalar_t>>& scratch, acc_of<scalar_t>* loss_per_utterance,
    acc_of<scalar_t>* score, acc_of<scalar_t>* pooled, cudaStream_t stream) {
  using acc_t = acc_of<scalar_t>;
  constexpr int vec = packed_width<scalar_t>();
  launch_center_norms(centers, layout, scratch.center_sq, stream);
  const dim3 grid(static_cast<unsigned>(plan.utterance_blocks), static_cast<unsigned>(plan.chunks));
  const size_t rows_bytes = kThreads * vec * sizeof(acc_t);
  if (rows_are_packed<scalar_t>(emb, layout.dim, layout.emb_stride_batch, layout.emb_stride_time)) {
    SPOOFLOSS_LAUNCH(grid, kThreads, rows_bytes, stream, pool_chunks_kernel<scalar_t, acc_t, true>)(
        emb, layout, plan.frames_per_chunk, scratch.partial);
  } else {
    SPOOFLOSS_LAUNCH(grid, kThreads, rows_bytes, stream, pool_chunks_kernel<scalar_t, acc_t, false>)(
        emb, layout, plan.frames_per_chunk, scratch.partial);
  }
  SPOOFLOSS_LAUNCH_CHECK();
  const size_t cos_bytes = layout.num_centers * sizeof(acc_t);
  SPOOFLOSS_LAUNCH(
      static_cast<unsigned>(plan.utterance_blocks), kThreads, cos_bytes, stream, cosine_epilogue_kernel<acc_t>)(
      scratch.partial, plan.chunks, centers, scratch.center_sq, layout, epilogue, loss_per_utterance, score, pooled);
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
    const acc_of<scalar_t>* grad_loss, const acc_of<scalar_t>* grad_score, const acc_of<scalar_t>* pooled,
    const acc_of<scalar_t>* centers, const CosineLayout& layout, const CosineEpilogue<acc_of<scalar_t>>& epilogue,
    Reduction reduction, const CosinePlan& plan, const CosineBackwardScratch<acc_of<scalar_t>>& scratch,
    scalar_t* grad_emb, acc_of<scalar_t>* grad_centers, cudaStream_t stream) {
  using acc_t = acc_of<scalar_t>;
  launch_center_norms(centers, layout, scratch.center_sq, stream);
  const auto utterance_blocks = static_cast<unsigned>(plan.utterance_blocks);
  const size_t coefficient_bytes = (3 * layout.num_centers + 1) * sizeof(acc_t);  // cos, g, coefficients
  SPOOFLOSS_LAUNCH(utterance_blocks, kThreads, coefficient_bytes, stream, backward_coefficients_kernel<acc_t>)(
      grad_loss, grad_score, pooled, centers, scratch.center_sq, layout, epilogue, reduction, scratch.frame_grad,
      scratch.alpha, scratch.g_cos);
  SPOOFLOSS_LAUNCH_CHECK();
  const dim3 frames_grid(utterance_blocks, static_cast<unsigned>(plan.chunks));
  if (rows_are_packed<scalar_t>(grad_emb, layout.dim, layout.emb_stride_batch, layout.emb_stride_time)) {
    SPOOFLOSS_LAUNCH(frames_grid, kThreads, 0, stream, broadcast_frames_kernel<scalar_t, acc_t, true>)(
        scratch.frame_grad, layout, plan.frames_per_chunk, grad_emb);
  } else {
    SPOOFLOSS_LAUNCH(frames_grid, kThreads, 0, stream, broadcast_frames_kernel<scalar_t, acc_t, false>)(
        scratch.frame_grad, layout, plan.frames_per_chunk, grad_emb);
  }
  SPOOFLOSS_LAUNCH_CHECK();
  const dim3 partials_grid(
      static_cast<unsigned>(ceil_div(layout.dim, kCenterColumns)), static_cast<unsigned>(layout.num_centers),
      static_cast<unsigned>(plan.batch_segments));
  SPOOFLOSS_LAUNCH(partials_grid, kThreads, 0, stream, center_gradient_partials_kernel<acc_t>)(
      pooled, scratch.alpha, layout.batch, layout.dim, layout.num_centers, plan.segment_length,
      scratch.center_partials);
  SPOOFLOSS_LAUNCH_CHECK();
  const dim3 finish_grid(static_cast<unsigned>(ceil_div(layout.dim, kThreads)), static_cast<unsigned>(layout.num_centers));
  SPOOFLOSS_LAUNCH(finish_grid, kThreads, 0, stream, center_gradient_finish_kernel<acc_t>)(
      scratch.center_partials, plan.batch_segments, scratch.g_cos, centers, scratch.center_sq, layout.batch,
      layout.dim, layout.num_centers, grad_centers);
  SPOOFLOSS_LAUNCH_CHECK();
}

#define SPOOFLOSS_INSTANTIATE_COSINE(scalar_t)                                                                   \
  template void launch_cosine_forward<scalar_t>(                                                                 \
      const scalar_t*, const acc_of<scalar_t>*, const CosineLayout&, const CosineEpilogue<acc_of<scalar_t>>&,      \
      const CosinePlan&, const CosineForwardScratch<acc_of<scalar_t>>&, acc_of<scalar_t>*, acc_of<scalar_t>*,     \
      acc_of<scalar_t>*, cudaStream_t);                                                                          \
  template void launch_cosine_backward<scalar_t>(                                                                \
      const acc_of<scalar_t>*, const acc_of<scalar_t>*, const acc_of<scalar_t>*, const acc_of<scalar_t>*,           \
      const CosineLayout&, const CosineEpilogue<acc_of<scalar_t>>&, Reduction, const CosinePlan&,                  \
      const CosineBackwardScratch<acc_of<scalar_t>>&, scalar_t*, acc_of<scalar_t>*, cudaStream_t);
SPOOFLOSS_INSTANTIATE_FOR_INPUT_TYPES(SPOOFLOSS_INSTANTIATE_COSINE)
#undef SPOOFLOSS_INSTANTIATE_COSINE

template void launch_reduce_loss<float>(const float*, int64_t, bool, float*, cudaStream_t);
template void launch_reduce_loss<double>(const double*, int64_t, bool, double*, cudaStream_t);

}  // namespace cuda
}  // namespace spoofloss
