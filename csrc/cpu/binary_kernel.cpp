// CPU kernels of the binary loss: BCE with logits over the flattened pred, its
// reduction in the same pass, and its backward.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../common.h"
#include "../math.h"
#include "fixed_order_sum.h"
#include "grain.h"
#include "row_loops.h"

namespace spoofloss {
namespace {

// Elements per work item; fixed, so the reduced loss does not depend on the
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

// out[j] = math::softplus_tail(x[j]) (or sigmoid), j < count <= kBinaryChunk:
// float32 math (float32, float16, bfloat16 logits) through RowLoops, vectorised
// where the CPU allows; float64 through math.h.
template <typename scalar_t, typename acc_t>
void transcendental_values(const scalar_t* x, int64_t count, acc_t* out, bool sigmoid) {
  if constexpr (std::is_same_v<acc_t, float>) {
    const auto& loops = cpu::row_loops();
    const auto values = sigmoid ? loops.sigmoid_values : loops.softplus_tail_values;
    if constexpr (std::is_same_v<scalar_t, float>) {
      values(x, count, out);
    } else {  // float16 / bfloat16: widened first, then the float32 loop
      float widened[kBinaryChunk];
      for (int64_t j = 0; j < count; ++j) widened[j] = static_cast<float>(x[j]);
      values(widened, count, out);
    }
  } else {
    for (int64_t j = 0; j < count; ++j) {
      const acc_t v = static_cast<acc_t>(x[j]);
      out[j] = sigmoid ? math::sigmoid(v) : math::softplus_tail(v);
    }
  }
}

// Runs `body(chunk, start, count, target, complement, values)` for every
// chunk of kBinaryChunk logits, spread over the threads, with the chunk's
// targets (and, for the forward, their complements; null otherwise) and its
// transcendental values (math::softplus_tail, or sigmoid) in hand.
template <typename scalar_t, typename acc_t, typename Body>
void for_each_chunk(const scalar_t* logits, const BinaryLayout& layout, bool sigmoid, const Body& body) {
  const int64_t n = layout.numel;
  const int64_t chunks = (n + kBinaryChunk - 1) / kBinaryChunk;
  at::parallel_for(0, chunks, grain(kBinaryChunk * kTranscendentalCost), [&](int64_t begin, int64_t end) {
    acc_t target[kBinaryChunk];
    acc_t complement[kBinaryChunk];
    acc_t values[kBinaryChunk];
    acc_t* complement_or_null = sigmoid ? nullptr : complement;
    for (int64_t c = begin; c < end; ++c) {
      const int64_t start = c * kBinaryChunk;
      const int64_t count = std::min(n, start + kBinaryChunk) - start;
      load_targets(layout, start, count, target, complement_or_null);
      transcendental_values(logits + start, count, values, sigmoid);
      body(c, start, count, target, complement_or_null, values);
    }
  });
}

at::Tensor binary_cross_entropy_cpu(const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label, int64_t reduction) {
  const auto args = prepare_binary_forward(pred, label, bonafide_label, reduction);
  const int64_t n = args.layout.numel;
  const bool reduce = static_cast<Reduction>(reduction) != Reduction::kNone;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "binary_cross_entropy_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* logits = args.pred.const_data_ptr<scalar_t>();
    const int64_t chunks = (n + kBinaryChunk - 1) / kBinaryChunk;
    // one float64 sum per chunk (fixed chunks: the same for any thread count)
    std::vector<double> partial(reduce ? chunks : 0);
    acc_t* per_element = reduce ? nullptr : args.loss.mutable_data_ptr<acc_t>();
    for_each_chunk<scalar_t, acc_t>(
        logits, args.layout, /*sigmoid=*/false,
        [&](int64_t chunk, int64_t start, int64_t count, const acc_t* target, const acc_t* complement,
            const acc_t* tail) {
          // the chunk's losses, then (for mean / sum) their float64 sum: two
          // loops, so that the first has no reduction in it and vectorises
          acc_t chunk_losses[kBinaryChunk];
          acc_t* out = reduce ? chunk_losses : per_element + start;
          for (int64_t j = 0; j < count; ++j) {
            out[j] = math::bce_with_logits_from_tail(
                static_cast<acc_t>(logits[start + j]), target[j], complement[j], tail[j]);
          }
          if (reduce) partial[chunk] = cpu::fixed_order_sum(chunk_losses, count);
        });
    if (reduce) {
      double total = cpu::fixed_order_sum(partial.data(), chunks);
      if (static_cast<Reduction>(reduction) == Reduction::kMean) total /= static_cast<double>(n);
      *args.loss.mutable_data_ptr<acc_t>() = static_cast<acc_t>(total);
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
    for_each_chunk<scalar_t, acc_t>(
        logits, args.layout, /*sigmoid=*/true,
        [&](int64_t, int64_t start, int64_t count, const acc_t* target, const acc_t*, const acc_t* sigmoid) {
          for (int64_t j = 0; j < count; ++j) {
            const int64_t i = start + j;
            // d BCE / d x = sigmoid(x) - t (math::bce_with_logits_grad)
            out[i] = static_cast<scalar_t>(math::reduction_weight(kind, upstream, i, n) * (sigmoid[j] - target[j]));
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
