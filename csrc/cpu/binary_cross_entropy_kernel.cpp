// CPU kernels of the binary loss: BCE with logits over the flattened pred, or
// the cross-entropy of two logits per label, class-weighted or not, with its
// reduction (and the total weight the mean divides by) in the same pass, and
// its backward.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../validation.h"
#include "../scalar_math.h"
#include "fixed_order_sum.h"
#include "grain.h"
#include "vector_loops.h"

namespace spoofloss {
namespace {

// Labels per work item; fixed, so the reduced loss does not depend on the
// number of threads.
constexpr int64_t kBinaryChunk = 2048;

// An element costs an exp and a log (the backward: an exp and a division),
// each worth about as much as a dozen additions of the memory-bound loops that
// kParallelGrain is tuned for: elements count this many times in the grain.
constexpr int64_t kTranscendentalCost = 16;

// Targets (1 = bona fide) of elements [start, start + count), checked to lie
// in [0, 1], and, where `complement` is given, their complements 1 - target:
// math::binary_target's values (each rounded once from the label), in loops
// with no branch on bonafide_label inside, so that they vectorise. The label
// dtype is switched on once per chunk, not per element.
template <typename acc_t>
void load_targets(const BinaryLayout& layout, int64_t start, int64_t count, acc_t* target, acc_t* complement) {
  // label -> `same`, 1 - label -> `flipped`; either may be null (not wanted)
  const bool bonafide_one = layout.bonafide_label == 1;
  acc_t* same = bonafide_one ? target : complement;
  acc_t* flipped = bonafide_one ? complement : target;
  const auto convert = [&](const auto& label_at) {
    const acc_t nan = math::quiet_nan<acc_t>();
    if (same != nullptr) {
      for (int64_t j = 0; j < count; ++j) {
        const double label = label_at(j);
        same[j] = label >= 0.0 && label <= 1.0 ? static_cast<acc_t>(label) : nan;
      }
    }
    if (flipped != nullptr) {
      for (int64_t j = 0; j < count; ++j) {
        const double label = label_at(j);
        flipped[j] = label >= 0.0 && label <= 1.0 ? static_cast<acc_t>(1.0 - label) : nan;
      }
    }
  };
  const auto typed = [&](const auto* labels) {
    convert([labels = labels + start](int64_t j) { return static_cast<double>(labels[j]); });
  };
  switch (layout.label_dtype) {
    case at::kLong:
      typed(static_cast<const int64_t*>(layout.label));
      break;
    case at::kInt:
      typed(static_cast<const int32_t*>(layout.label));
      break;
    case at::kFloat:
      typed(static_cast<const float*>(layout.label));
      break;
    default:
      convert([&](int64_t j) { return math::load_as_double(layout.label, layout.label_dtype, start + j); });
  }
  bool invalid = false;  // NaN outside [0, 1]
  for (int64_t j = 0; j < count; ++j) invalid |= target[j] != target[j];
  if (!invalid) return;
  for (int64_t j = 0; j < count; ++j) {
    TORCH_CHECK_VALUE(
        target[j] == target[j], "label[", start + j, "] = ",
        math::load_as_double(layout.label, layout.label_dtype, start + j), " lies outside [0, 1]");
  }
}

// The chunk's logits [count] in acc_t: for one logit, pred itself where it is
// acc_t already (float32, float64: no copy), else widened into `buffer`; for
// two logits, the difference bona fide minus spoof of each row, into `buffer`.
template <typename scalar_t, typename acc_t>
const acc_t* chunk_logits(const scalar_t* pred, const BinaryLayout& layout, int64_t start, int64_t count, acc_t* buffer) {
  if (layout.num_logits == 2) {
    const scalar_t* row = pred + start * layout.pred_stride_row;
    const scalar_t* bonafide = row + layout.bonafide_column_offset();
    const scalar_t* spoof = row + layout.spoof_column_offset();
    if (layout.pred_stride_row == 2 && layout.pred_stride_class == 1) {
      // contiguous [N, 2]: constant strides, so that the loop vectorises
      for (int64_t j = 0; j < count; ++j) {
        buffer[j] = static_cast<acc_t>(bonafide[2 * j]) - static_cast<acc_t>(spoof[2 * j]);
      }
    } else {
      const int64_t stride = layout.pred_stride_row;
      for (int64_t j = 0; j < count; ++j) {
        buffer[j] = static_cast<acc_t>(bonafide[j * stride]) - static_cast<acc_t>(spoof[j * stride]);
      }
    }
    return buffer;
  }
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return pred + start;
  } else {
    for (int64_t j = 0; j < count; ++j) buffer[j] = static_cast<acc_t>(pred[start + j]);
    return buffer;
  }
}

// out[j] = math::softplus_tail(x[j]) (or sigmoid), j < count <= kBinaryChunk:
// float32 math (float32, float16, bfloat16 logits) through VectorLoops, vectorised
// where the CPU allows; float64 through scalar_math.h.
template <typename acc_t>
void transcendental_values(const acc_t* x, int64_t count, acc_t* out, bool sigmoid) {
  if constexpr (std::is_same_v<acc_t, float>) {
    const auto& loops = cpu::vector_loops();
    (sigmoid ? loops.sigmoid_values : loops.softplus_tail_values)(x, count, out);
  } else {
    for (int64_t j = 0; j < count; ++j) out[j] = sigmoid ? math::sigmoid(x[j]) : math::softplus_tail(x[j]);
  }
}

// Runs `body(chunk, start, count, logit, target, complement, values)` for
// every chunk of kBinaryChunk labels, spread over the threads, with the
// chunk's logits (chunk_logits), targets, their complements where
// `complement` is asked for (null otherwise), and its transcendental values
// (math::softplus_tail, or sigmoid) in hand.
template <typename scalar_t, typename acc_t, typename Body>
void for_each_chunk(
    const scalar_t* pred, const BinaryLayout& layout, bool sigmoid, bool complement, const Body& body) {
  const int64_t n = layout.numel;
  const int64_t chunks = (n + kBinaryChunk - 1) / kBinaryChunk;
  const int64_t cost = kBinaryChunk * kTranscendentalCost * layout.num_logits;
  at::parallel_for(0, chunks, grain(cost), [&](int64_t begin, int64_t end) {
    acc_t logit_buffer[kBinaryChunk];
    acc_t target[kBinaryChunk];
    acc_t complement_buffer[kBinaryChunk];
    acc_t values[kBinaryChunk];
    acc_t* complement_or_null = complement ? complement_buffer : nullptr;
    for (int64_t c = begin; c < end; ++c) {
      const int64_t start = c * kBinaryChunk;
      const int64_t count = std::min(n, start + kBinaryChunk) - start;
      load_targets(layout, start, count, target, complement_or_null);
      const acc_t* logit = chunk_logits(pred, layout, start, count, logit_buffer);
      transcendental_values(logit, count, values, sigmoid);
      body(c, start, count, logit, target, complement_or_null, values);
    }
  });
}

// Class-weighted losses of a chunk (math::weighted_binary_cross_entropy_from_tail)
// with a = w_b t, c = w_s u, and where kTargetWeights, each label's weight
// a + c (w_{y_i} for a class index) into target_weight.
template <bool kTwoLogits, bool kTargetWeights, typename acc_t>
void weighted_losses(
    const acc_t* logit, const acc_t* target, const acc_t* complement, const acc_t* tail, int64_t count,
    acc_t weight_bonafide, acc_t weight_spoof, acc_t* out, acc_t* target_weight) {
  for (int64_t j = 0; j < count; ++j) {
    const acc_t a = weight_bonafide * target[j];
    const acc_t c = weight_spoof * complement[j];
    out[j] = math::weighted_binary_cross_entropy_from_tail<kTwoLogits>(logit[j], a, c, tail[j]);
    if constexpr (kTargetWeights) target_weight[j] = a + c;
  }
}

std::tuple<at::Tensor, at::Tensor> binary_cross_entropy_cpu(
    const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label, int64_t reduction,
    c10::optional<c10::ArrayRef<double>> class_weight, int64_t num_logits) {
  const auto args = prepare_binary_forward(pred, label, bonafide_label, reduction, class_weight, num_logits);
  const BinaryLayout& layout = args.layout;
  const int64_t n = layout.numel;
  const bool reduce = static_cast<Reduction>(reduction) != Reduction::kNone;
  // the total weight is summed from the labels in the same pass, or is N
  const bool sum_target_weights = reduce && layout.weight_sum_divisor;
  const bool plain = layout.num_logits == 1 && !layout.weighted;  // ESPnet's BCE with logits
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "binary_cross_entropy_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t chunks = (n + kBinaryChunk - 1) / kBinaryChunk;
    // one float64 sum per chunk (fixed chunks: the same for any thread count)
    std::vector<double> partial(reduce ? chunks : 0);
    std::vector<double> partial_weight(sum_target_weights ? chunks : 0);
    acc_t* per_element = reduce ? nullptr : args.loss.mutable_data_ptr<acc_t>();
    const acc_t weight_bonafide = static_cast<acc_t>(layout.weight_bonafide);
    const acc_t weight_spoof = static_cast<acc_t>(layout.weight_spoof);
    for_each_chunk<scalar_t, acc_t>(
        args.pred.const_data_ptr<scalar_t>(), layout, /*sigmoid=*/false, /*complement=*/true,
        [&](int64_t chunk, int64_t start, int64_t count, const acc_t* logit, const acc_t* target,
            const acc_t* complement, const acc_t* tail) {
          // the chunk's losses, then (for mean / sum) their float64 sum: two
          // loops, so that the first has no reduction in it and vectorises
          acc_t chunk_losses[kBinaryChunk];
          acc_t* out = reduce ? chunk_losses : per_element + start;
          if (plain) {
            for (int64_t j = 0; j < count; ++j) {
              out[j] = math::binary_cross_entropy_from_tail(logit[j], target[j], complement[j], tail[j]);
            }
          } else if (sum_target_weights) {
            acc_t target_weight[kBinaryChunk];
            weighted_losses<true, true>(
                logit, target, complement, tail, count, weight_bonafide, weight_spoof, out, target_weight);
            partial_weight[chunk] = cpu::fixed_order_sum(target_weight, count);
          } else if (layout.num_logits == 2) {
            weighted_losses<true, false>(
                logit, target, complement, tail, count, weight_bonafide, weight_spoof, out, static_cast<acc_t*>(nullptr));
          } else {
            weighted_losses<false, false>(
                logit, target, complement, tail, count, weight_bonafide, weight_spoof, out, static_cast<acc_t*>(nullptr));
          }
          if (reduce) partial[chunk] = cpu::fixed_order_sum(chunk_losses, count);
        });
    double total_weight = 0;  // reduction none: 0, as torch's nll_loss
    if (reduce) {
      total_weight = sum_target_weights ? cpu::fixed_order_sum(partial_weight.data(), chunks) : static_cast<double>(n);
      double total = cpu::fixed_order_sum(partial.data(), chunks);
      if (static_cast<Reduction>(reduction) == Reduction::kMean) total /= total_weight;
      *args.loss.mutable_data_ptr<acc_t>() = static_cast<acc_t>(total);
    }
    *args.total_weight.mutable_data_ptr<acc_t>() = static_cast<acc_t>(total_weight);
  });
  return {args.loss, args.total_weight};
}

at::Tensor binary_cross_entropy_backward_cpu(
    const at::Tensor& grad_loss, const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label,
    int64_t reduction, c10::optional<c10::ArrayRef<double>> class_weight, int64_t num_logits,
    const c10::optional<at::Tensor>& total_weight) {
  const auto args = prepare_binary_backward(
      grad_loss, pred, label, bonafide_label, reduction, class_weight, num_logits, total_weight);
  const BinaryLayout& layout = args.layout;
  const int64_t n = layout.numel;
  const bool plain = layout.num_logits == 1 && !layout.weighted;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "binary_cross_entropy_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* upstream = args.grad_loss.const_data_ptr<acc_t>();
    const auto kind = static_cast<Reduction>(reduction);
    scalar_t* out = args.grad_pred.mutable_data_ptr<scalar_t>();
    if (plain) {
      for_each_chunk<scalar_t, acc_t>(
          args.pred.const_data_ptr<scalar_t>(), layout, /*sigmoid=*/true, /*complement=*/false,
          [&](int64_t, int64_t start, int64_t count, const acc_t*, const acc_t* target, const acc_t*,
              const acc_t* sigmoid) {
            for (int64_t j = 0; j < count; ++j) {
              const int64_t i = start + j;
              // d BCE / d x = sigmoid(x) - t (math::binary_cross_entropy_grad)
              out[i] = static_cast<scalar_t>(math::reduction_weight(kind, upstream, i, n) * (sigmoid[j] - target[j]));
            }
          });
      return;
    }
    // the upstream gradient of a reduced loss, over what the mean divided by
    const acc_t divisor = args.total_weight_in.defined() ? *args.total_weight_in.const_data_ptr<acc_t>()
                                                         : static_cast<acc_t>(n);
    const acc_t reduced = kind == Reduction::kNone ? acc_t(0)
        : kind == Reduction::kMean                 ? upstream[0] / divisor
                                                   : upstream[0];
    const acc_t weight_bonafide = static_cast<acc_t>(layout.weight_bonafide);
    const acc_t weight_spoof = static_cast<acc_t>(layout.weight_spoof);
    const int64_t bonafide_column = layout.bonafide_label;
    for_each_chunk<scalar_t, acc_t>(
        args.pred.const_data_ptr<scalar_t>(), layout, /*sigmoid=*/true, /*complement=*/true,
        [&](int64_t, int64_t start, int64_t count, const acc_t*, const acc_t* target, const acc_t* complement,
            const acc_t* sigmoid) {
          acc_t grad[kBinaryChunk];  // d loss / d logit (difference)
          for (int64_t j = 0; j < count; ++j) {
            const acc_t up = kind == Reduction::kNone ? upstream[start + j] : reduced;
            grad[j] = up * math::weighted_binary_cross_entropy_grad_from_sigmoid(
                               sigmoid[j], weight_bonafide * target[j], weight_spoof * complement[j]);
          }
          if (layout.num_logits == 1) {
            for (int64_t j = 0; j < count; ++j) out[start + j] = static_cast<scalar_t>(grad[j]);
          } else {  // grad_pred [N, 2] contiguous: +g on the bona fide column, -g on the spoof one
            scalar_t* row = out + 2 * start;
            for (int64_t j = 0; j < count; ++j) {
              row[2 * j + bonafide_column] = static_cast<scalar_t>(grad[j]);
              row[2 * j + 1 - bonafide_column] = static_cast<scalar_t>(-grad[j]);
            }
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
