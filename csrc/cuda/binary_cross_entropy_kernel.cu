// CUDA kernels of the binary loss: BCE with logits over the flattened pred, or
// the cross-entropy of two logits per label, class-weighted or not.
//
// Forward with reduction none: one elementwise pass. With mean or sum: a
// grid-stride pass writes one partial sum per block (compensated sums, then
// a fixed tree) of the losses and, where the mean divides by the total weight
// of the targets (two logits, class weights, class-index labels), of the
// targets' weights; then a single block adds the partials in order and
// divides: the loss is repeatable run to run, and the number of blocks
// depends on n alone (launch.h), so it is the same on every GPU.
// A label outside [0, 1] gives a NaN loss and gradient for that element (the
// CPU kernel raises instead; here that would need a host synchronisation).
#include "../scalar_math.h"
#include "device_runtime.h"
#include "device_utils.cuh"
#include "launch.h"

namespace spoofloss {
namespace cuda {
namespace {

// The logit of utterance i: pred[i] for one logit; for two, the difference
// bona fide minus spoof (in acc_t, from the logits as stored).
template <typename scalar_t, typename acc_t>
__device__ inline acc_t logit_at(const scalar_t* __restrict__ pred, const BinaryLayout& layout, int64_t i) {
  if (layout.num_logits == 1) return static_cast<acc_t>(pred[i]);
  const scalar_t* row = pred + i * layout.pred_stride_row;
  return static_cast<acc_t>(row[layout.bonafide_column_offset()]) -
      static_cast<acc_t>(row[layout.spoof_column_offset()]);
}

// The weighted target a = w_b t and complement c = w_s u of utterance i, each
// of t and u taken from the label itself (a small complement, a soft label
// near 1, keeps its digits at large logits); NaN outside [0, 1].
template <typename acc_t>
__device__ inline math::BinaryTarget<acc_t> weighted_target_at(const BinaryLayout& layout, int64_t i) {
  auto target = math::binary_target<acc_t>(
      math::load_as_double(layout.label, layout.label_dtype, i), layout.bonafide_label);
  if (layout.weighted) {
    target.target *= static_cast<acc_t>(layout.weight_bonafide);
    target.complement *= static_cast<acc_t>(layout.weight_spoof);
  }
  return target;
}

// per_element: [n] (reduction none) or null; partial: [gridDim.x] sums of the
// losses followed, where layout.weight_sum_divisor, by [gridDim.x] sums of
// the targets' weights; or null. total_weight: written 0 (reduction none) by
// the first thread, or null.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) binary_cross_entropy_forward_kernel(
    const scalar_t* __restrict__ pred, const BinaryLayout layout, acc_t* __restrict__ per_element,
    acc_t* __restrict__ partial, acc_t* __restrict__ total_weight) {
  SPOOFLOSS_SHARED_ARRAY(acc_t, shared, 2 * (kThreads / kWarp));
  CompensatedSum<acc_t> running;  // a thread's share can be thousands of elements
  CompensatedSum<acc_t> running_weight;
  const bool sum_weights = partial != nullptr && layout.weight_sum_divisor;
  const int64_t n = layout.numel;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const acc_t logit = logit_at<scalar_t, acc_t>(pred, layout, i);
    const auto target = weighted_target_at<acc_t>(layout, i);
    acc_t value;
    if (layout.num_logits == 2) {
      value = math::weighted_binary_cross_entropy_from_tail<true>(
          logit, target.target, target.complement, math::softplus_tail(logit));
    } else if (layout.weighted) {
      value = math::weighted_binary_cross_entropy_from_tail<false>(
          logit, target.target, target.complement, math::softplus_tail(logit));
    } else {
      value = math::binary_cross_entropy(logit, target.target, target.complement);
    }
    if (per_element != nullptr) {
      per_element[i] = value;
    } else {
      running.add(value);
      if (sum_weights) running_weight.add(target.target + target.complement);
    }
  }
  if (partial != nullptr) {
    if (sum_weights) {
      acc_t sums[2] = {running.sum, running_weight.sum};
      block_sum(sums, shared);
      if (threadIdx.x == 0) {
        partial[blockIdx.x] = sums[0];
        partial[gridDim.x + blockIdx.x] = sums[1];
      }
    } else {
      acc_t sum[1] = {running.sum};
      block_sum(sum, shared);
      if (threadIdx.x == 0) partial[blockIdx.x] = sum[0];
    }
  }
  if (total_weight != nullptr && blockIdx.x == 0 && threadIdx.x == 0) *total_weight = acc_t(0);
}

// loss = (sum of the loss partials [blocks]) / total weight (mean) or the sum
// itself (sum); total_weight = the sum of the weight partials [blocks] after
// them where `summed_weights`, else `constant_weight` (N). One block, a fixed
// order.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) binary_cross_entropy_finish_kernel(
    const acc_t* __restrict__ partial, int64_t blocks, bool summed_weights, acc_t constant_weight, bool mean,
    acc_t* __restrict__ loss, acc_t* __restrict__ total_weight) {
  SPOOFLOSS_SHARED_ARRAY(acc_t, shared, 2 * (kThreads / kWarp));
  CompensatedSum<acc_t> running;
  CompensatedSum<acc_t> running_weight;
  for (int64_t i = threadIdx.x; i < blocks; i += kThreads) {
    running.add(partial[i]);
    if (summed_weights) running_weight.add(partial[blocks + i]);
  }
  acc_t sums[2] = {running.sum, running_weight.sum};
  block_sum(sums, shared);
  if (threadIdx.x == 0) {
    const acc_t weight = summed_weights ? sums[1] : constant_weight;
    *loss = mean ? sums[0] / weight : sums[0];
    *total_weight = weight;
  }
}

// total_weight: [] the mean divides by (the forward's), or null: N.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) binary_cross_entropy_backward_kernel(
    const acc_t* __restrict__ grad_loss, const scalar_t* __restrict__ pred, const BinaryLayout layout,
    Reduction reduction, const acc_t* __restrict__ total_weight, scalar_t* __restrict__ grad_pred) {
  const int64_t n = layout.numel;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const bool plain = layout.num_logits == 1 && !layout.weighted;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const acc_t logit = logit_at<scalar_t, acc_t>(pred, layout, i);
    if (plain) {
      const acc_t weight = math::reduction_weight(reduction, grad_loss, i, n);
      const acc_t target = math::bonafide_target<acc_t>(
          math::load_as_double(layout.label, layout.label_dtype, i), layout.bonafide_label);
      grad_pred[i] = static_cast<scalar_t>(weight * math::binary_cross_entropy_grad(logit, target));
      continue;
    }
    const acc_t up = reduction == Reduction::kMean && total_weight != nullptr ? grad_loss[0] / *total_weight
                                                                               : math::reduction_weight(reduction, grad_loss, i, n);
    const auto target = weighted_target_at<acc_t>(layout, i);
    const acc_t grad = up * math::weighted_binary_cross_entropy_grad_from_sigmoid(
                                math::sigmoid(logit), target.target, target.complement);
    if (layout.num_logits == 1) {
      grad_pred[i] = static_cast<scalar_t>(grad);
    } else {  // grad_pred [N, 2] contiguous: +grad on the bona fide column, -grad on the spoof one
      grad_pred[2 * i + layout.bonafide_label] = static_cast<scalar_t>(grad);
      grad_pred[2 * i + 1 - layout.bonafide_label] = static_cast<scalar_t>(-grad);
    }
  }
}

}  // namespace

template <typename scalar_t>
void launch_binary_cross_entropy_forward(
    const scalar_t* pred, const BinaryLayout& layout, int64_t blocks, acc_of<scalar_t>* per_element,
    acc_of<scalar_t>* partial, bool mean, acc_of<scalar_t>* loss, acc_of<scalar_t>* total_weight,
    cudaStream_t stream) {
  using acc_t = acc_of<scalar_t>;
  SPOOFLOSS_LAUNCH(static_cast<unsigned>(blocks), kThreads, 0, stream, binary_cross_entropy_forward_kernel<scalar_t, acc_t>)(
      pred, layout, per_element, partial, partial != nullptr ? nullptr : total_weight);
  SPOOFLOSS_LAUNCH_CHECK();
  if (partial != nullptr) {
    SPOOFLOSS_LAUNCH(1, kThreads, 0, stream, binary_cross_entropy_finish_kernel<acc_t>)(
        partial, blocks, layout.weight_sum_divisor, static_cast<acc_t>(layout.numel), mean, loss, total_weight);
    SPOOFLOSS_LAUNCH_CHECK();
  }
}

template <typename scalar_t>
void launch_binary_cross_entropy_backward(
    const acc_of<scalar_t>* grad_loss, const scalar_t* pred, const BinaryLayout& layout, int64_t blocks,
    Reduction reduction, const acc_of<scalar_t>* total_weight, scalar_t* grad_pred, cudaStream_t stream) {
  SPOOFLOSS_LAUNCH(static_cast<unsigned>(blocks), kThreads, 0, stream, binary_cross_entropy_backward_kernel<scalar_t, acc_of<scalar_t>>)(
      grad_loss, pred, layout, reduction, total_weight, grad_pred);
  SPOOFLOSS_LAUNCH_CHECK();
}

#define SPOOFLOSS_INSTANTIATE_BCE(scalar_t)                                                                     \
  template void launch_binary_cross_entropy_forward<scalar_t>(                                                                   \
      const scalar_t*, const BinaryLayout&, int64_t, acc_of<scalar_t>*, acc_of<scalar_t>*, bool,                \
      acc_of<scalar_t>*, acc_of<scalar_t>*, cudaStream_t);                                                      \
  template void launch_binary_cross_entropy_backward<scalar_t>(                                                                  \
      const acc_of<scalar_t>*, const scalar_t*, const BinaryLayout&, int64_t, Reduction, const acc_of<scalar_t>*, \
      scalar_t*, cudaStream_t);
SPOOFLOSS_INSTANTIATE_FOR_INPUT_TYPES(SPOOFLOSS_INSTANTIATE_BCE)
#undef SPOOFLOSS_INSTANTIATE_BCE

}  // namespace cuda
}  // namespace spoofloss
