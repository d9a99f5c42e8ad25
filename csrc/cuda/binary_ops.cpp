// Host side of the CUDA binary loss: validation, allocation, dtype dispatch
// and registration. The kernels are in binary_kernel.cu.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../common.h"
#include "host_runtime.h"
#include "launch.h"

namespace spoofloss {
namespace {

at::Tensor binary_cross_entropy_cuda(
    const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label, int64_t reduction) {
  const auto args = prepare_binary_forward(pred, label, bonafide_label, reduction);  // validates before the guard
  const cuda::DeviceGuard device_guard(pred.device());
  const int64_t n = args.layout.numel;
  const bool reduce = static_cast<Reduction>(reduction) != Reduction::kNone;
  const int64_t blocks = cuda::binary_blocks(n);
  // Scratch for the reduction: one partial sum per block.
  at::Tensor partial = reduce ? cuda::empty_scratch({blocks}, args.loss.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "binary_cross_entropy_cuda", [&] {
    using acc_t = cuda::acc_of<scalar_t>;
    const acc_t divisor = static_cast<Reduction>(reduction) == Reduction::kMean ? static_cast<acc_t>(n) : acc_t(1);
    acc_t* loss = args.loss.mutable_data_ptr<acc_t>();
    cuda::launch_bce_forward<scalar_t>(
        args.pred.const_data_ptr<scalar_t>(), args.layout, blocks, reduce ? nullptr : loss,
        reduce ? partial.mutable_data_ptr<acc_t>() : nullptr, divisor, reduce ? loss : nullptr,
        cuda::current_stream());
  });
  return args.loss;
}

at::Tensor binary_cross_entropy_backward_cuda(
    const at::Tensor& grad_loss, const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label,
    int64_t reduction) {
  const auto args = prepare_binary_backward(grad_loss, pred, label, bonafide_label, reduction);
  const cuda::DeviceGuard device_guard(pred.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "binary_cross_entropy_backward_cuda", [&] {
    cuda::launch_bce_backward<scalar_t>(
        args.grad_loss.const_data_ptr<cuda::acc_of<scalar_t>>(), args.pred.const_data_ptr<scalar_t>(), args.layout,
        cuda::binary_blocks(args.layout.numel), static_cast<Reduction>(reduction),
        args.grad_pred.mutable_data_ptr<scalar_t>(), cuda::current_stream());
  });
  return args.grad_pred;
}

}  // namespace

TORCH_LIBRARY_IMPL(spoofloss, SPOOFLOSS_CUDA_DISPATCH_KEY, m) {
  m.impl("binary_cross_entropy", &binary_cross_entropy_cuda);
  m.impl("_binary_cross_entropy_backward", &binary_cross_entropy_backward_cuda);
}

}  // namespace spoofloss
