// CPU kernels of the binary loss: BCE with logits over the flattened pred, its
// reduction in the same pass, and its backward.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../common.h"
#include "../math.h"
#include "grain.h"

namespace spoofloss {
namespace {

// Elements per work item; fixed, so the reduced loss does not depend on the
// number of threads.
constexpr int64_t kBinaryChunk = 4096;

// Target of element i (1 = bona fide), checked to lie in [0, 1].
template <typename acc_t>
acc_t checked_target(const BinaryLayout& layout, int64_t i) {
  const double value = math::load_as_double(layout.label, layout.label_dtype, i);
  const acc_t target = math::bonafide_target<acc_t>(value, layout.bonafide_label);
  TORCH_CHECK_VALUE(target == target, "label[", i, "] = ", value, " lies outside [0, 1]");
  return target;
}

at::Tensor binary_cross_entropy_cpu(const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label, int64_t reduction) {
  const auto args = prepare_binary_forward(pred, label, bonafide_label, reduction);
  const int64_t n = args.layout.numel;
  const bool reduce = static_cast<Reduction>(reduction) != Reduction::kNone;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "binary_cross_entropy_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* logits = args.pred.const_data_ptr<scalar_t>();
    const int64_t chunks = (n + kBinaryChunk - 1) / kBinaryChunk;
    std::vector<acc_t> partial(reduce ? chunks : 0);
    acc_t* per_element = reduce ? nullptr : args.loss.mutable_data_ptr<acc_t>();
    at::parallel_for(0, chunks, grain(kBinaryChunk), [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        acc_t sum = 0;
        const int64_t stop = std::min(n, (c + 1) * kBinaryChunk);
        for (int64_t i = c * kBinaryChunk; i < stop; ++i) {
          const acc_t value = math::bce_with_logits(static_cast<acc_t>(logits[i]), checked_target<acc_t>(args.layout, i));
          if (reduce) {
            sum += value;
          } else {
            per_element[i] = value;
          }
        }
        if (reduce) partial[c] = sum;
      }
    });
    if (reduce) {
      acc_t total = 0;
      for (const acc_t part : partial) total += part;
      if (static_cast<Reduction>(reduction) == Reduction::kMean) total /= static_cast<acc_t>(n);
      *args.loss.mutable_data_ptr<acc_t>() = total;
    }
  });
  return args.loss;
}

at::Tensor binary_cross_entropy_backward_cpu(
    const at::Tensor& grad_loss, const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label,
    int64_t reduction) {
  const auto args = prepare_binary_backward(grad_loss, pred, label, bonafide_label, reduction);
  const int64_t n = args.layout.numel;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "binary_cross_entropy_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* logits = args.pred.const_data_ptr<scalar_t>();
    const acc_t* upstream = args.grad_loss.const_data_ptr<acc_t>();
    const auto kind = static_cast<Reduction>(reduction);
    scalar_t* out = args.grad_pred.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, kParallelGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const acc_t weight = math::reduction_weight(kind, upstream, i, n);
        const acc_t grad = math::bce_with_logits_grad(static_cast<acc_t>(logits[i]), checked_target<acc_t>(args.layout, i));
        out[i] = static_cast<scalar_t>(weight * grad);
      }
    });
  });
  return args.grad_pred;
}

}  // namespace

TORCH_LIBRARY_IMPL(spoofloss, CPU, m) {
  m.impl("binary_cross_entropy", &binary_cross_entropy_cpu);
  m.impl("_binary_cross_entropy_backward", &binary_cross_entropy_backward_cpu);
}

}  // namespace spoofloss
