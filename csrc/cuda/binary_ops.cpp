// Host side of the CUDA binary loss: validation, allocation, dtype dispatch
// and registration. The kernels are in binary_kernel.cu.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common.h"
#include "launch.h"

namespace spoofloss {
namespace {

// Enough blocks to fill the GPU a few times over, no more than the data needs.
unsigned elementwise_blocks(int64_t n) {
  const int64_t most = 8 * static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(most, cuda::ceil_div(n, cuda::kThreads))));
}

at::Tensor binary_cross_entropy_cuda(
    const at::Tensor& pred_in, const at::Tensor& label_in, int64_t bonafide_label, int64_t reduction) {
  check_binary_inputs(pred_in, label_in, bonafide_label, reduction);
  const c10::cuda::CUDAGuard device_guard(pred_in.device());
  const at::Tensor pred = pred_in.contiguous();
  const at::Tensor label = label_in.contiguous();
  const int64_t n = pred.numel();
  const auto options = pred.options().dtype(compute_dtype(pred.scalar_type()));
  const bool reduce = static_cast<Reduction>(reduction) != Reduction::kNone;
  at::Tensor loss = at::empty(reduced_shape(reduction, n), options);
  const unsigned blocks = elementwise_blocks(n);
  at::Tensor partial = reduce ? at::empty({static_cast<int64_t>(blocks)}, options) : at::Tensor();
  const cuda::BinaryLabels labels{label.const_data_ptr(), label.scalar_type(), bonafide_label};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "binary_cross_entropy_cuda", [&] {
    using acc_t = cuda::acc_of<scalar_t>;
    const acc_t divisor = static_cast<Reduction>(reduction) == Reduction::kMean ? static_cast<acc_t>(n) : acc_t(1);
    cuda::launch_bce_forward<scalar_t>(
        pred.const_data_ptr<scalar_t>(), labels, n, blocks, reduce ? nullptr : loss.mutable_data_ptr<acc_t>(),
        reduce ? partial.mutable_data_ptr<acc_t>() : nullptr, divisor,
        reduce ? loss.mutable_data_ptr<acc_t>() : nullptr, at::cuda::getCurrentCUDAStream());
  });
  return loss;
}

at::Tensor binary_cross_entropy_backward_cuda(
    const at::Tensor& grad_loss_in, const at::Tensor& pred_in, const at::Tensor& label_in, int64_t bonafide_label,
    int64_t reduction) {
  check_binary_inputs(pred_in, label_in, bonafide_label, reduction);
  check_binary_grad_loss(grad_loss_in, pred_in, reduction);
  const c10::cuda::CUDAGuard device_guard(pred_in.device());
  const at::Tensor pred = pred_in.contiguous();
  const at::Tensor label = label_in.contiguous();
  const at::Tensor grad_loss = grad_loss_in.to(compute_dtype(pred.scalar_type())).contiguous();
  const int64_t n = pred.numel();
  at::Tensor grad_pred = at::empty(pred.sizes(), pred.options());
  const cuda::BinaryLabels labels{label.const_data_ptr(), label.scalar_type(), bonafide_label};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "binary_cross_entropy_backward_cuda", [&] {
    cuda::launch_bce_backward<scalar_t>(
        grad_loss.const_data_ptr<cuda::acc_of<scalar_t>>(), pred.const_data_ptr<scalar_t>(), labels, n,
        elementwise_blocks(n), static_cast<Reduction>(reduction), grad_pred.mutable_data_ptr<scalar_t>(),
        at::cuda::getCurrentCUDAStream());
  });
  return grad_pred;
}

}  // namespace

TORCH_LIBRARY_IMPL(spoofloss, CUDA, m) {
  m.impl("binary_cross_entropy", &binary_cross_entropy_cuda);
  m.impl("_binary_cross_entropy_backward", &binary_cross_entropy_backward_cuda);
}

}  // namespace spoofloss
