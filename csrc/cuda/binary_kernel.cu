// CUDA kernels of the binary loss (BCE with logits over the flattened pred).
//
// Forward with reduction none: one elementwise pass. With mean or sum: a
// grid-stride pass writes one partial sum per block (compensated sums, then
// a fixed tree), then a single block adds the partials in order: the loss is
// repeatable run to run, and the number of blocks depends on n alone
// (launch.h), so it is the same on every GPU.
// A label outside [0, 1] gives a NaN loss and gradient for that element (the
// CPU kernel raises instead; here that would need a host synchronisation).
#include "../math.h"
#include "device_runtime.h"
#include "device_utils.cuh"
#include "launch.h"

namespace spoofloss {
namespace cuda {
namespace {

template <typename acc_t>
__device__ inline acc_t target_at(const BinaryLayout& layout, int64_t i) {
  return math::bonafide_target<acc_t>(math::load_as_double(layout.label, layout.label_dtype, i), layout.bonafide_label);
}

// per_element: [n] (reduction none) or null; partial: [gridDim.x] or null.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) bce_forward_kernel(
    const scalar_t* __restrict__ pred, const BinaryLayout layout, acc_t* __restrict__ per_element,
    acc_t* __restrict__ partial) {
  SPOOFLOSS_SHARED_ARRAY(acc_t, shared, kThreads / kWarp);
  CompensatedSum<acc_t> running;  // a thread's share can be thousands of elements
  const int64_t n = layout.numel;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    // the target and 1 - target each taken from the label itself: a small
    // complement (a soft label near 1) keeps its digits at large logits
    const auto target = math::binary_target<acc_t>(
        math::load_as_double(layout.label, layout.label_dtype, i), layout.bonafide_label);
    const acc_t value = math::bce_with_logits(static_cast<acc_t>(pred[i]), target.target, target.complement);
    if (per_element != nullptr) {
      per_element[i] = value;
    } else {
      running.add(value);
    }
  }
  if (partial != nullptr) {
    acc_t sum[1] = {running.sum};
    block_sum(sum, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = sum[0];
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) bce_backward_kernel(
    const acc_t* __restrict__ grad_loss, const scalar_t* __restrict__ pred, const BinaryLayout layout,
    Reduction reduction, scalar_t* __restrict__ grad_pred) {
  const int64_t n = layout.numel;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const acc_t weight = math::reduction_weight(reduction, grad_loss, i, n);
    const acc_t grad = math::bce_with_logits_grad(static_cast<acc_t>(pred[i]), target_at<acc_t>(layout, i));
    grad_pred[i] = static_cast<scalar_t>(weight * grad);
  }
}

}  // namespace

template <typename scalar_t>
void launch_bce_forward(
    const scalar_t* pred, const BinaryLayout& layout, int64_t blocks, acc_of<scalar_t>* per_element,
    acc_of<scalar_t>* partial, acc_of<scalar_t> divisor, acc_of<scalar_t>* loss, cudaStream_t stream) {
  using acc_t = acc_of<scalar_t>;
  SPOOFLOSS_LAUNCH(static_cast<unsigned>(blocks), kThreads, 0, stream, bce_forward_kernel<scalar_t, acc_t>)(
      pred, layout, per_element, partial);
  SPOOFLOSS_LAUNCH_CHECK();
  if (partial != nullptr) {
    SPOOFLOSS_LAUNCH(1, kThreads, 0, stream, sum_kernel<acc_t>)(partial, blocks, divisor, loss);
    SPOOFLOSS_LAUNCH_CHECK();
  }
}

template <typename scalar_t>
void launch_bce_backward(
    const acc_of<scalar_t>* grad_loss, const scalar_t* pred, const BinaryLayout& layout, int64_t blocks,
    Reduction reduction, scalar_t* grad_pred, cudaStream_t stream) {
  SPOOFLOSS_LAUNCH(static_cast<unsigned>(blocks), kThreads, 0, stream, bce_backward_kernel<scalar_t, acc_of<scalar_t>>)(
      grad_loss, pred, layout, reduction, grad_pred);
  SPOOFLOSS_LAUNCH_CHECK();
}

#define SPOOFLOSS_INSTANTIATE_BCE(scalar_t)                                                                     \
  template void launch_bce_forward<scalar_t>(                                                                   \
      const scalar_t*, const BinaryLayout&, int64_t, acc_of<scalar_t>*, acc_of<scalar_t>*,                      \
      acc_of<scalar_t>, acc_of<scalar_t>*, cudaStream_t);                                                       \
  template void launch_bce_backward<scalar_t>(                                                                  \
      const acc_of<scalar_t>*, const scalar_t*, const BinaryLayout&, int64_t, Reduction, scalar_t*,           \
      cudaStream_t);
SPOOFLOSS_INSTANTIATE_FOR_INPUT_TYPES(SPOOFLOSS_INSTANTIATE_BCE)
#undef SPOOFLOSS_INSTANTIATE_BCE

}  // namespace cuda
}  // namespace spoofloss
