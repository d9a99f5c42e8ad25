// The seam between the host code (csrc/cuda/*_ops.cpp: tensors, validation,
// allocation, dispatch) and the CUDA kernels (csrc/cuda/*_kernel.cu). Only raw
// pointers and plain structs cross it, so nvcc never parses the ATen headers:
// the .cu files stay small and compile fast for every architecture.
//
// The launch geometry is decided here, on the host, from the shapes alone:
// never from the GPU model (its multiprocessor count), so that a given input
// gives the same bits on every GPU, whatever its size.
#pragma once

#include <ATen/OpMathType.h>
#ifdef SPOOFLOSS_CUDA_EMULATION
#include "emulation/api.h"  // cudaStream_t of the emulated device
#else
#include <cuda_runtime_api.h>
#endif

#include <algorithm>
#include <cstdint>

#include "../cosine_losses.h"
#include "../layout.h"
#include "../scalar_math.h"

namespace spoofloss {
namespace cuda {

constexpr int kThreads = 256;  // every kernel here runs 256-thread blocks

// Blocks a launch aims for when the data allow: a few waves on the largest
// GPUs (B200: 148 multiprocessors, several resident blocks each).
constexpr int64_t kTargetBlocks = 1024;

// The most grid.y / grid.z a GPU accepts.
constexpr int64_t kMaxGridYZ = 65535;

// The accumulation type of an input dtype: float for float, half and bfloat16.
template <typename scalar_t>
using acc_of = at::opmath_type<scalar_t>;

C10_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// How the cosine-margin kernels cut up their work. Per-utterance kernels run
// `utterance_blocks` blocks that loop over the batch (more than 2^31 - 1
// utterances need no grid that large); the pooling and the gradient write
// split each utterance's T frames into `chunks`; the centre gradient splits
// the batch into `batch_segments` summed in order.
struct CosinePlan {
  int64_t chunks = 1;
  int64_t frames_per_chunk = 1;
  int64_t utterance_blocks = 1;
  int64_t batch_segments = 1;
  int64_t segment_length = 1;
};

// max_grid_x: what the device accepts as grid.x (2^31 - 1 on every GPU since
// Kepler; settable on the emulated device to exercise the batch loop).
inline CosinePlan plan_cosine(
    int64_t batch, int64_t frames, int64_t dim, int scalar_bytes, int acc_bytes, int64_t max_grid_x) {
  CosinePlan plan;
  batch = std::max<int64_t>(1, batch);
  frames = std::max<int64_t>(1, frames);
  dim = std::max<int64_t>(1, dim);
  // Each chunk writes a partial row [D] of acc_t and the epilogue reads it
  // back: 2 * acc_bytes per feature against frames_per_chunk * scalar_bytes of
  // emb read. At least 50 * acc_bytes / scalar_bytes frames a chunk keeps that
  // traffic under 4 % of emb's; at least 2K elements a chunk keeps a block's
  // share worth its launch.
  const int64_t min_frames = std::max(ceil_div(50 * acc_bytes, scalar_bytes), ceil_div(2048, dim));
  const int64_t wanted = ceil_div(kTargetBlocks, batch);
  const int64_t most = std::max<int64_t>(1, frames / min_frames);
  const int64_t chunks = std::clamp<int64_t>(std::min(wanted, most), 1, kMaxGridYZ);
  plan.frames_per_chunk = ceil_div(frames, chunks);
  plan.chunks = ceil_div(frames, plan.frames_per_chunk);  // no empty trailing chunk
  plan.utterance_blocks = std::min(batch, max_grid_x);
  // The centre gradient reads pooled [B, D] once; segments of at least 256
  // utterances, at most 64 of them.
  plan.batch_segments = std::clamp<int64_t>(ceil_div(batch, 256), 1, 64);
  plan.segment_length = ceil_div(batch, plan.batch_segments);
  plan.batch_segments = ceil_div(batch, plan.segment_length);
  return plan;
}

// Blocks of the elementwise binary-loss kernels: about four elements a thread,
// at most kTargetBlocks (they loop); a function of n alone.
inline int64_t binary_blocks(int64_t n) {
  return std::clamp<int64_t>(ceil_div(n, 4 * kThreads), 1, kTargetBlocks);
}

// Scratch of the cosine-margin forward: center_sq [C], partial [B, chunks, D].
template <typename acc_t>
struct CosineForwardScratch {
  acc_t* center_sq;
  acc_t* partial;
};

// Scratch of the backward: center_sq [C], frame_grad [B, D], alpha and g_cos
// [B, C], center_partials [batch_segments, C, D].
template <typename acc_t>
struct CosineBackwardScratch {
  acc_t* center_sq;
  acc_t* frame_grad;
  acc_t* alpha;
  acc_t* g_cos;
  acc_t* center_partials;
};

// Cosine-margin forward: loss_per_utterance [B] may be null (the score op);
// score [B] and pooled [B, D] are written.
template <typename scalar_t>
void launch_cosine_forward(
    const scalar_t* emb, const acc_of<scalar_t>* centers, const CosineLayout& layout,
    const CosineEpilogue<acc_of<scalar_t>>& epilogue, const CosinePlan& plan,
    const CosineForwardScratch<acc_of<scalar_t>>& scratch, acc_of<scalar_t>* loss_per_utterance,
    acc_of<scalar_t>* score, acc_of<scalar_t>* pooled, cudaStream_t stream);

// loss = sum (mean when `mean`) of values [n], by one block in a fixed order.
template <typename acc_t>
void launch_reduce_loss(const acc_t* values, int64_t n, bool mean, acc_t* loss, cudaStream_t stream);

// Cosine-margin backward of grad_loss . loss + grad_score . score (either
// may be null): grad_emb (contiguous, layout's sizes) and grad_centers [C, D]
// are written.
template <typename scalar_t>
void launch_cosine_backward(
    const acc_of<scalar_t>* grad_loss, const acc_of<scalar_t>* grad_score, const acc_of<scalar_t>* pooled,
    const acc_of<scalar_t>* centers, const CosineLayout& layout, const CosineEpilogue<acc_of<scalar_t>>& epilogue,
    Reduction reduction, const CosinePlan& plan, const CosineBackwardScratch<acc_of<scalar_t>>& scratch,
    scalar_t* grad_emb, acc_of<scalar_t>* grad_centers, cudaStream_t stream);

// The binary loss (layout.num_logits 1: BCE with logits; 2: cross-entropy of
// two logits; class-weighted where layout.weighted). Reduction none: writes
// per_element [n] and total_weight = 0. Otherwise writes one partial sum per
// block into partial ([blocks], or [2 * blocks] where
// layout.weight_sum_divisor: the targets' weights after the losses), then
// loss = sum / total weight (mean) or the sum, and total_weight (the targets'
// total weight, or n).
template <typename scalar_t>
void launch_binary_cross_entropy_forward(
    const scalar_t* pred, const BinaryLayout& layout, int64_t blocks, acc_of<scalar_t>* per_element,
    acc_of<scalar_t>* partial, bool mean, acc_of<scalar_t>* loss, acc_of<scalar_t>* total_weight,
    cudaStream_t stream);

// grad_pred: contiguous, pred's sizes. total_weight: the forward's, where the
// mean divides by the targets' total weight; else null (the mean divides by n).
template <typename scalar_t>
void launch_binary_cross_entropy_backward(
    const acc_of<scalar_t>* grad_loss, const scalar_t* pred, const BinaryLayout& layout, int64_t blocks,
    Reduction reduction, const acc_of<scalar_t>* total_weight, scalar_t* grad_pred, cudaStream_t stream);

}  // namespace cuda
}  // namespace spoofloss

// Explicit instantiation of a launcher for the four input dtypes.
#define SPOOFLOSS_INSTANTIATE_FOR_INPUT_TYPES(MACRO) \
  MACRO(float)                                       \
  MACRO(double)                                      \
  MACRO(c10::Half)                                   \
  MACRO(c10::BFloat16)
