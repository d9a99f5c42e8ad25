// The seam between the host code (csrc/cuda/*_ops.cpp: tensors, validation,
// allocation, dispatch) and the CUDA kernels (csrc/cuda/*_kernel.cu). Only raw
// pointers and plain structs cross it, so nvcc never parses the ATen headers:
// the .cu files stay small and compile fast for every architecture.
#pragma once

#include <ATen/OpMathType.h>
#ifdef SPOOFLOSS_CUDA_EMULATION
#include "emulation/api.h"  // cudaStream_t of the emulated device
#else
#include <cuda_runtime_api.h>
#endif

#include <algorithm>
#include <cstdint>

#include "../layout.h"
#include "../math.h"

namespace spoofloss {
namespace cuda {

constexpr int kThreads = 256;  // every kernel here runs 256-thread blocks

// The accumulation type of an input dtype: float for float, half and bfloat16.
template <typename scalar_t>
using acc_of = at::opmath_type<scalar_t>;

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// How many chunks to cut each utterance's T frames into so that B x chunks
// blocks keep every multiprocessor busy (a few blocks each) even when B is
// small, without making a block's share smaller than about 2K elements.
inline int64_t time_chunks(int64_t batch, int64_t frames, int64_t dim, int multiprocessors) {
  const int64_t wanted = ceil_div(4 * static_cast<int64_t>(multiprocessors), batch);
  const int64_t most = ceil_div(frames, std::max<int64_t>(1, 2048 / dim));
  const int64_t chunks = std::max<int64_t>(1, std::min(wanted, most));
  return ceil_div(frames, ceil_div(frames, chunks));  // no empty trailing chunk
}

// Cosine-margin forward: partial [B, chunks, D] is scratch; loss_per_utterance
// [B] may be null (the score op); score [B] and pooled [B, D] are written.
template <typename scalar_t>
void launch_cosine_forward(
    const scalar_t* emb, const acc_of<scalar_t>* centers, const CosineLayout& layout, Epilogue epilogue,
    const MarginParams<acc_of<scalar_t>>& params, int64_t score_center, int64_t chunks, acc_of<scalar_t>* partial,
    acc_of<scalar_t>* loss_per_utterance, acc_of<scalar_t>* score, acc_of<scalar_t>* pooled, cudaStream_t stream);

// loss = sum (mean when `mean`) of values [n], by one block in a fixed order.
template <typename acc_t>
void launch_reduce_loss(const acc_t* values, int64_t n, bool mean, acc_t* loss, cudaStream_t stream);

// Cosine-margin backward: frame_grad [B, D], alpha and g_cos [B, kMaxCenters]
// are scratch; grad_emb (contiguous, layout's sizes) and grad_centers [C, D]
// are written.
template <typename scalar_t>
void launch_cosine_backward(
    const acc_of<scalar_t>* grad_loss, const acc_of<scalar_t>* pooled, const acc_of<scalar_t>* centers,
    const CosineLayout& layout, Epilogue epilogue, Reduction reduction, const MarginParams<acc_of<scalar_t>>& params,
    int64_t score_target, int64_t chunks, acc_of<scalar_t>* frame_grad, acc_of<scalar_t>* alpha,
    acc_of<scalar_t>* g_cos, scalar_t* grad_emb, acc_of<scalar_t>* grad_centers, cudaStream_t stream);

// BCE with logits. Reduction none: writes per_element [n]. Otherwise writes
// one partial sum per block into partial [blocks], then loss = sum / divisor.
template <typename scalar_t>
void launch_bce_forward(
    const scalar_t* pred, const BinaryLayout& layout, unsigned blocks, acc_of<scalar_t>* per_element,
    acc_of<scalar_t>* partial, acc_of<scalar_t> divisor, acc_of<scalar_t>* loss, cudaStream_t stream);

template <typename scalar_t>
void launch_bce_backward(
    const acc_of<scalar_t>* grad_loss, const scalar_t* pred, const BinaryLayout& layout, unsigned blocks,
    Reduction reduction, scalar_t* grad_pred, cudaStream_t stream);

}  // namespace cuda
}  // namespace spoofloss

// Explicit instantiation of a launcher for the four input dtypes.
#define SPOOFLOSS_INSTANTIATE_FOR_INPUT_TYPES(MACRO) \
  MACRO(float)                                       \
  MACRO(double)                                      \
  MACRO(c10::Half)                                   \
  MACRO(c10::BFloat16)
