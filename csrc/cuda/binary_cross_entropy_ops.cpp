// Host side of the CUDA binary loss: validation, allocation, dtype dispatch
// and registration. The kernels are in binary_cross_entropy_kernel.cu.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../validation.h"
#include "host_runtime.h"
#include "launch.h"

namespace spoofloss {
namespace {

std::tuple<at::Tensor, at::Tensor> binary_cross_entropy_cuda(
    const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label, int64_t reduction,
    c10::optional<c10::ArrayRef<double>> class_weight, int64_t num_logits) {
  // validates before the guard
  const auto args = prepare_binary_forward(pred, label, bonafide_label, reduction, class_weight, num_logits);
  const cuda::DeviceGuard device_guard(pred.device());
  const int64_t n = args.layout.numel;
  const bool reduce = static_cast<Reduction>(reduction) != Reduction::kNone;
  const int64_t blocks = cuda::binary_blocks(n);
  // Scratch for the reduction: one partial sum per block, of the losses and,
  // where the mean divides by it, of the targets' weights.
  const int64_t partials = args.layout.weight_sum_divisor ? 2 * blocks : blocks;
  at::Tensor partial = reduce ? cuda::empty_scratch({partials}, args.loss.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "binary_cross_entropy_cuda", [&] {
    using acc_t = cuda::acc_of<scalar_t>;
    acc_t* loss = args.loss.mutable_data_ptr<acc_t>();
    cuda::launch_binary_cross_entropy_forward<scalar_t>(
        args.pred.const_data_ptr<scalar_t>(), args.layout, blocks, reduce ? nullptr : loss,
        reduce ? partial.mutable_data_ptr<acc_t>() : nullptr, static_cast<Reduction>(reduction) == Reduction::kMean,
        reduce ? loss : nullptr, args.total_weight.mutable_data_ptr<acc_t>(), cuda::current_stream());
  });
  return {args.loss, args.total_weight};
}

at::Tensor binary_cross_entropy_backward_cuda(
    const at::Tensor& grad_loss, const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label,
    int64_t reduction, c10::optional<c10::ArrayRef<double>> class_weight, int64_t num_logits,
    const c10::optional<at::Tensor>& total_weight) {
  const auto args = prepare_binary_backward(
      grad_loss, pred, label, bonafide_label, reduction, class_weight, num_logits, total_weight);
  const cuda::DeviceGuard device_guard(pred.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "binary_cross_entropy_backward_cuda", [&] {
    using acc_t = cuda::acc_of<scalar_t>;
    cuda::launch_binary_cross_entropy_backward<scalar_t>(
        args.grad_loss.const_data_ptr<acc_t>(), args.pred.const_data_ptr<scalar_t>(), args.layout,
        cuda::binary_blocks(args.layout.numel), static_cast<Reduction>(reduction),
        args.total_weight_in.defined() ? args.total_weight_in.const_data_ptr<acc_t>() : nullptr,
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
