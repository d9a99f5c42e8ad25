// CPU kernels of the cosine-margin op family (AM-softmax, OC-softmax, score).
//
// Forward: emb [B, T, D] is read once, in work items of (utterance, chunk of
// frames) spread over the threads, each summing its frames into a partial row
// [D]; a second, cheap pass per utterance adds the partial rows in order, forms
// the mean and runs the epilogue from scalar_math.h. Chunks are sized from D alone,
// so the result does not depend on the number of threads.
// Backward: the gradient of the mean is recomputed per utterance from pooled
// [B, D] (emb is not read again) and broadcast over the valid frames.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "../validation.h"
#include "../cosine_losses.h"
#include "../scalar_math.h"
#include "fixed_order_sum.h"
#include "grain.h"
#include "vector_loops.h"

namespace spoofloss {
namespace {

// About 64 KiB of float32 frames per work item: large enough to amortise the
// scheduling, small enough that B = 1 with a long utterance still spreads.
constexpr int64_t kChunkElements = 16384;

int64_t frames_per_chunk(int64_t dim) {
  return std::max<int64_t>(1, kChunkElements / dim);
}

// Frame counts of every utterance, checked: [1, T] or a clear error.
std::vector<int64_t> read_lengths(const CosineLayout& layout) {
  std::vector<int64_t> lengths(layout.batch, layout.frames);
  if (layout.lengths == nullptr) return lengths;
  for (const auto b : c10::irange(layout.batch)) {
    const double value = math::load_as_double(layout.lengths, layout.lengths_dtype, b * layout.lengths_stride);
    lengths[b] = math::valid_length(value, layout.frames);
    TORCH_CHECK_VALUE(
        lengths[b] > 0, "lengths[", b, "] = ", value, " lies outside [1, T] = [1, ", layout.frames, "]");
  }
  return lengths;
}

// Per-utterance targets (cosine_losses.h), checked: a label that is not a
// class of the loss, or a centre index that is neither -1 nor a centre, is a
// clear error here (the CUDA kernels, which cannot raise without a host
// synchronisation, give that utterance NaN instead).
std::vector<UtteranceTarget> read_targets(const CosineLayout& layout) {
  std::vector<UtteranceTarget> targets(layout.batch);
  for (const auto b : c10::irange(layout.batch)) {
    targets[b] = math::read_target(layout, b);
    if (targets[b].label < 0) {
      const double value = math::load_as_double(layout.label, layout.label_dtype, b * layout.label_stride);
      TORCH_CHECK_VALUE(
          false, "label[", b, "] = ", value,
          layout.label_classes == 2 ? std::string(" is not 0 or 1")
                                    : " is not a class index in [0, " + std::to_string(layout.label_classes) + ")");
    }
    if (targets[b].center < -1) {
      const double value =
          math::load_as_double(layout.center_index, layout.center_index_dtype, b * layout.center_index_stride);
      TORCH_CHECK_VALUE(
          false, "center_index[", b, "] = ", value, " is neither -1 (none) nor a centre index in [0, ",
          layout.num_centers, ")");
    }
  }
  return targets;
}

// acc[d] += sum over frames [t0, t1) of row_t[d]. Four frames per pass, so the
// accumulator row is loaded and stored a quarter as often; the inner loops
// have no dependence across d and vectorise. float32 goes through VectorLoops
// (the same loop, also built for AVX2).
template <typename scalar_t, typename acc_t>
void add_frames(const scalar_t* first, int64_t stride_time, int64_t t0, int64_t t1, int64_t dim, acc_t* __restrict acc) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    cpu::vector_loops().add_rows(first + t0 * stride_time, stride_time, t1 - t0, dim, acc);
    return;
  }
  int64_t t = t0;
  for (; t + 4 <= t1; t += 4) {
    const scalar_t* __restrict r0 = first + t * stride_time;
    const scalar_t* __restrict r1 = r0 + stride_time;
    const scalar_t* __restrict r2 = r1 + stride_time;
    const scalar_t* __restrict r3 = r2 + stride_time;
    for (int64_t d = 0; d < dim; ++d) {
      acc[d] += (static_cast<acc_t>(r0[d]) + static_cast<acc_t>(r1[d])) +
          (static_cast<acc_t>(r2[d]) + static_cast<acc_t>(r3[d]));
    }
  }
  for (; t < t1; ++t) {
    const scalar_t* __restrict r = first + t * stride_time;
    for (int64_t d = 0; d < dim; ++d) acc[d] += static_cast<acc_t>(r[d]);
  }
}

// Writes `row` [D] to frames [t0, t1) of one utterance's gradient (contiguous).
template <typename scalar_t, typename acc_t>
void write_frames(const acc_t* row, int64_t t0, int64_t t1, int64_t dim, bool streaming, scalar_t* utterance_grad) {
  if (t0 >= t1) return;
  if constexpr (std::is_same_v<scalar_t, float>) {
    cpu::vector_loops().fill_rows(row, t1 - t0, dim, utterance_grad + t0 * dim, streaming);
    return;
  } else if constexpr (!std::is_same_v<scalar_t, acc_t>) {
    // float16 / bfloat16: round the row once, then copy it to every frame
    // (the rounding, scalar code with NaN handling, would otherwise run per element)
    const std::vector<scalar_t> rounded(row, row + dim);
    for (int64_t t = t0; t < t1; ++t) std::copy(rounded.begin(), rounded.end(), utterance_grad + t * dim);
    return;
  }
  for (int64_t t = t0; t < t1; ++t) {
    scalar_t* __restrict out = utterance_grad + t * dim;
    for (int64_t d = 0; d < dim; ++d) out[d] = static_cast<scalar_t>(row[d]);
  }
}

// Whether a gradient of this many bytes is better written around the cache
// (streaming stores skip reading each line before writing it, but leave
// nothing in the cache for the encoder's backward that reads the gradient
// next). Measured on a 2-core AMD EPYC VM (benchmarks/NOTES.md): slower at
// 3 MB, 1.3-2x faster from 13 MB. The threshold is 8 MiB, or the last-level
// cache the C library reports if that is smaller; SPOOFLOSS_STREAM_MIN_BYTES
// overrides it (read once).
bool stream_gradient(int64_t bytes) {
  static const int64_t threshold = [] {
    if (const char* env = std::getenv("SPOOFLOSS_STREAM_MIN_BYTES")) return static_cast<int64_t>(std::atoll(env));
    int64_t bound = int64_t(8) << 20;
#ifdef _SC_LEVEL3_CACHE_SIZE  // glibc
    const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (l3 > 0) bound = std::min<int64_t>(bound, l3);
#endif
    return bound;
  }();
  return bytes > threshold;
}

// |c_k|^2 [C] of the centres [C, D], and their inverse norms [C].
template <typename acc_t>
void center_norms(const acc_t* centers, int64_t num_centers, int64_t dim, acc_t* center_sq, acc_t* inv_norm) {
  for (const auto k : c10::irange(num_centers)) {
    acc_t sum_sq = 0;
    const acc_t* c = centers + k * dim;
    for (int64_t d = 0; d < dim; ++d) sum_sq += c[d] * c[d];
    bool clamped;
    center_sq[k] = sum_sq;
    inv_norm[k] = math::inverse_norm(sum_sq, &clamped);
  }
}

// The centres [C, D] transposed to [D, C]: the C values of one feature are
// contiguous, so a tile of centres is read as one vector per feature.
template <typename acc_t>
std::vector<acc_t> transposed_centers(const acc_t* centers, int64_t num_centers, int64_t dim) {
  std::vector<acc_t> out(num_centers * dim);
  for (int64_t k = 0; k < num_centers; ++k) {
    for (int64_t d = 0; d < dim; ++d) out[d * num_centers + k] = centers[k * dim + d];
  }
  return out;
}

// dot[j] = sum_d x[d] c_{k+j}[d] for kTile centres from k, each summed over d
// in order, from the transposed centres [D, C]. kTile is a constant: the sums
// stay in registers and the compiler vectorises across the tile (never across
// d, which would reorder a sum). A run-time tile kept them in memory: 64
// centres then cost more than pooling a 32 x 200 x 128 batch.
template <int64_t kTile, typename acc_t>
void dot_tile(const acc_t* __restrict x, const acc_t* __restrict centers_t, int64_t num_centers, int64_t k,
              int64_t dim, acc_t* __restrict dot) {
  acc_t sums[kTile] = {};
  for (int64_t d = 0; d < dim; ++d) {
    const acc_t xd = x[d];
    const acc_t* __restrict row = centers_t + d * num_centers + k;
    for (int64_t j = 0; j < kTile; ++j) sums[j] += xd * row[j];
  }
  for (int64_t j = 0; j < kTile; ++j) dot[j] = sums[j];
}

// Cosines cos [C] of one pooled row with the centres (centers_t: [D, C], see
// transposed_centers); returns the row's inverse norm. Centres sixteen at a
// time, then 8, 4, 2, 1; every dot product is summed over d in order, whatever
// its tile, so the cosines do not depend on C's tiling.
template <typename acc_t>
acc_t pooled_cosines(
    const acc_t* x, const acc_t* centers_t, const acc_t* inv_center_norm, int64_t num_centers, int64_t dim, acc_t* cos,
    bool* clamped) {
  acc_t sum_sq = 0;
  for (int64_t d = 0; d < dim; ++d) sum_sq += x[d] * x[d];
  const acc_t inv_norm = math::inverse_norm(sum_sq, clamped);
  int64_t k = 0;
  for (; k + 16 <= num_centers; k += 16) dot_tile<16>(x, centers_t, num_centers, k, dim, cos + k);
  if (k + 8 <= num_centers) {
    dot_tile<8>(x, centers_t, num_centers, k, dim, cos + k);
    k += 8;
  }
  if (k + 4 <= num_centers) {
    dot_tile<4>(x, centers_t, num_centers, k, dim, cos + k);
    k += 4;
  }
  if (k + 2 <= num_centers) {
    dot_tile<2>(x, centers_t, num_centers, k, dim, cos + k);
    k += 2;
  }
  if (k < num_centers) dot_tile<1>(x, centers_t, num_centers, k, dim, cos + k);
  for (int64_t j = 0; j < num_centers; ++j) cos[j] = cos[j] * inv_norm * inv_center_norm[j];
  return inv_norm;
}

// Masked time-mean of emb into pooled [B, D] (acc_t).
template <typename scalar_t, typename acc_t>
void pool_frames(const scalar_t* emb, const CosineLayout& layout, const std::vector<int64_t>& lengths, acc_t* pooled) {
  const int64_t dim = layout.dim;
  const int64_t chunk = frames_per_chunk(dim);
  const int64_t chunks = (layout.frames + chunk - 1) / chunk;
  // partial: [B, chunks, D]; a chunk past an utterance's end stays zero.
  std::vector<acc_t> partial(layout.batch * chunks * dim, acc_t(0));
  const int64_t item_elements = std::min(chunk, layout.frames) * dim;
  at::parallel_for(0, layout.batch * chunks, grain(item_elements), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks;
      const int64_t t0 = (item % chunks) * chunk;
      const int64_t t1 = std::min(t0 + chunk, lengths[b]);
      if (t0 < t1) {
        add_frames(emb + b * layout.emb_stride_batch, layout.emb_stride_time, t0, t1, dim, partial.data() + item * dim);
      }
    }
  });
  at::parallel_for(0, layout.batch, grain(chunks * dim), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      acc_t* row = pooled + b * dim;
      const acc_t* first = partial.data() + b * chunks * dim;
      std::copy(first, first + dim, row);
      for (int64_t c = 1; c < chunks; ++c) {
        const acc_t* part = first + c * dim;
        for (int64_t d = 0; d < dim; ++d) row[d] += part[d];
      }
      const acc_t inv_length = acc_t(1) / static_cast<acc_t>(lengths[b]);
      for (int64_t d = 0; d < dim; ++d) row[d] *= inv_length;
    }
  });
}

// Shared by the loss and the score: pooled, then per-utterance loss and score.
template <typename scalar_t, typename acc_t>
void cosine_forward(
    const scalar_t* emb, const acc_t* centers, const CosineLayout& layout, const CosineEpilogue<acc_t>& epilogue,
    acc_t* loss_per_utterance, acc_t* score, acc_t* pooled) {
  const auto lengths = read_lengths(layout);
  const auto targets = read_targets(layout);
  pool_frames(emb, layout, lengths, pooled);
  const int64_t num_centers = layout.num_centers;
  std::vector<acc_t> center_sq(num_centers), inv_center_norm(num_centers);
  center_norms(centers, num_centers, layout.dim, center_sq.data(), inv_center_norm.data());
  const auto centers_t = transposed_centers(centers, num_centers, layout.dim);
  const auto kind = static_cast<LossKind>(epilogue.loss);
  at::parallel_for(0, layout.batch, grain((num_centers + 1) * layout.dim), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> cos(num_centers);
    for (int64_t b = begin; b < end; ++b) {
      bool clamped;
      pooled_cosines(
          pooled + b * layout.dim, centers_t.data(), inv_center_norm.data(), num_centers, layout.dim, cos.data(),
          &clamped);
      score[b] = math::utterance_score<acc_t>(epilogue, cos.data(), num_centers, targets[b], acc_t(0), nullptr);
      if (loss_per_utterance != nullptr) {
        loss_per_utterance[b] =
            math::cosine_loss<acc_t>(kind, cos.data(), num_centers, targets[b], epilogue.params, acc_t(0), nullptr);
      }
    }
  });
}

// Shared by the loss and the score (args.per_utterance undefined).
void run_cosine_forward(
    const CosineForwardArgs& args, int64_t loss, double scale, double margin_bonafide, double margin_spoof,
    int64_t bonafide_label, int64_t score_rule, int64_t score_center) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.emb.scalar_type(), "cosine_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    cosine_forward<scalar_t, acc_t>(
        args.emb.const_data_ptr<scalar_t>(), args.centers.const_data_ptr<acc_t>(), args.layout,
        cosine_epilogue<acc_t>(loss, scale, margin_bonafide, margin_spoof, bonafide_label, score_rule, score_center),
        args.per_utterance.defined() ? args.per_utterance.mutable_data_ptr<acc_t>() : nullptr,
        args.score.mutable_data_ptr<acc_t>(), args.pooled.mutable_data_ptr<acc_t>());
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cosine_margin_loss_cpu(
    const at::Tensor& emb, const at::Tensor& centers, const at::Tensor& label, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& center_index, int64_t loss, double scale, double margin_bonafide,
    double margin_spoof, int64_t bonafide_label, int64_t score_rule, int64_t score_center, int64_t reduction) {
  const auto args = prepare_cosine_forward(
      emb, centers, label, lengths, center_index, loss, bonafide_label, score_rule, score_center, reduction);
  run_cosine_forward(args, loss, scale, margin_bonafide, margin_spoof, bonafide_label, score_rule, score_center);
  if (static_cast<Reduction>(reduction) == Reduction::kNone) {
    return {args.per_utterance, args.score, args.pooled};
  }
  // A float64 sum in a fixed order (cpu::fixed_order_sum): deterministic, and
  // accurate to float32's rounding at any B.
  at::Tensor reduced = at::empty({}, args.per_utterance.options());
  AT_DISPATCH_FLOATING_TYPES(reduced.scalar_type(), "cosine_margin_loss_cpu_reduce", [&] {
    double total = cpu::fixed_order_sum(args.per_utterance.const_data_ptr<scalar_t>(), args.layout.batch);
    if (static_cast<Reduction>(reduction) == Reduction::kMean) total /= static_cast<double>(args.layout.batch);
    *reduced.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(total);
  });
  return {reduced, args.score, args.pooled};
}

std::tuple<at::Tensor, at::Tensor> cosine_score_cpu(
    const at::Tensor& emb, const at::Tensor& centers, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& center_index, int64_t score_rule, int64_t score_center, double scale) {
  const int64_t none = static_cast<int64_t>(Reduction::kNone);
  const auto args = prepare_cosine_forward(
      emb, centers, c10::nullopt, lengths, center_index, kNoLoss, /*bonafide_label=*/0, score_rule, score_center, none);
  run_cosine_forward(args, kNoLoss, scale, 0.0, 0.0, 0, score_rule, score_center);
  return {args.score, args.pooled};
}

template <typename scalar_t, typename acc_t>
void cosine_backward(
    const acc_t* grad_loss, const acc_t* grad_score, const acc_t* pooled, const acc_t* centers,
    const CosineLayout& layout, const CosineEpilogue<acc_t>& epilogue, Reduction reduction, scalar_t* grad_emb,
    acc_t* grad_centers) {
  const auto lengths = read_lengths(layout);
  const auto targets = read_targets(layout);
  const int64_t batch = layout.batch;
  const int64_t dim = layout.dim;
  const int64_t num_centers = layout.num_centers;
  std::vector<acc_t> center_sq(num_centers), inv_center_norm(num_centers);
  center_norms(centers, num_centers, dim, center_sq.data(), inv_center_norm.data());
  const auto centers_t = transposed_centers(centers, num_centers, dim);
  const auto kind = static_cast<LossKind>(epilogue.loss);

  // Per utterance: d loss / d mean as a row [D] already divided by the length
  // (what every valid frame receives), alpha [B, C] for the centre gradients,
  // and g_k cos_k [B, C] for their radial term.
  std::vector<acc_t> frame_grad(batch * dim);
  std::vector<acc_t> alpha(batch * num_centers);
  std::vector<acc_t> g_cos(batch * num_centers);
  at::parallel_for(0, batch, grain((2 * num_centers + 2) * dim), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> cos(num_centers), g(num_centers);
    for (int64_t b = begin; b < end; ++b) {
      const acc_t* x = pooled + b * dim;
      bool clamped;
      const acc_t inv_norm =
          pooled_cosines(x, centers_t.data(), inv_center_norm.data(), num_centers, dim, cos.data(), &clamped);
      std::fill(g.begin(), g.end(), acc_t(0));
      if (grad_loss != nullptr) {
        const acc_t weight = math::reduction_weight(reduction, grad_loss, b, batch);
        math::cosine_loss<acc_t>(kind, cos.data(), num_centers, targets[b], epilogue.params, weight, g.data());
      }
      if (grad_score != nullptr) {
        math::utterance_score<acc_t>(epilogue, cos.data(), num_centers, targets[b], grad_score[b], g.data());
      }
      acc_t* alpha_b = alpha.data() + b * num_centers;
      const acc_t beta =
          math::pooled_gradient(g.data(), cos.data(), center_sq.data(), inv_norm, clamped, num_centers, alpha_b);
      for (int64_t k = 0; k < num_centers; ++k) g_cos[b * num_centers + k] = g[k] * cos[k];
      const acc_t inv_length = acc_t(1) / static_cast<acc_t>(lengths[b]);
      acc_t* row = frame_grad.data() + b * dim;
      for (int64_t d = 0; d < dim; ++d) row[d] = beta * x[d];
      for (int64_t k = 0; k < num_centers; ++k) {
        const acc_t a = alpha_b[k];
        // A centre without gradient adds nothing: a multi-centre loss (SAMO)
        // moves one or two of its C centres per utterance. (NaN is not 0: kept.)
        if (a == acc_t(0)) continue;
        const acc_t* c = centers + k * dim;
        for (int64_t d = 0; d < dim; ++d) row[d] += a * c[d];
      }
      for (int64_t d = 0; d < dim; ++d) row[d] *= inv_length;
    }
  });

  // grad_emb (contiguous [B, T, D]): the row on valid frames, zero on padding.
  const int64_t frames = layout.frames;
  const int64_t chunk = frames_per_chunk(dim);
  const int64_t chunks = (frames + chunk - 1) / chunk;
  const bool streaming = stream_gradient(batch * frames * dim * static_cast<int64_t>(sizeof(scalar_t)));
  at::parallel_for(0, batch * chunks, grain(std::min(chunk, frames) * dim), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks;
      const int64_t t0 = (item % chunks) * chunk;
      const int64_t t1 = std::min(t0 + chunk, frames);
      const int64_t valid_end = std::clamp(lengths[b], t0, t1);
      scalar_t* utterance_grad = grad_emb + b * frames * dim;
      write_frames(frame_grad.data() + b * dim, t0, valid_end, dim, streaming, utterance_grad);
      std::fill(utterance_grad + valid_end * dim, utterance_grad + t1 * dim, scalar_t(0));
    }
    if (streaming) cpu::vector_loops().store_fence();  // by the thread that made the stores
  });

  // grad_centers [C, D], one centre per work item: sum over b in index order
  // (deterministic) of alpha_bk x_b, plus the radial term
  // -(sum_b g_bk cos_bk) c_k / |c_k|^2.
  at::parallel_for(0, num_centers, grain(batch * dim), [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      acc_t sum_g_cos = 0;
      for (int64_t b = 0; b < batch; ++b) sum_g_cos += g_cos[b * num_centers + k];
      const acc_t radial = math::radial_scale(sum_g_cos, center_sq[k]);
      acc_t* out = grad_centers + k * dim;
      for (int64_t d = 0; d < dim; ++d) out[d] = radial * centers[k * dim + d];
      for (int64_t b = 0; b < batch; ++b) {
        const acc_t a = alpha[b * num_centers + k];
        if (a == acc_t(0)) continue;  // as above
        const acc_t* x = pooled + b * dim;
        for (int64_t d = 0; d < dim; ++d) out[d] += a * x[d];
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> cosine_margin_loss_backward_cpu(
    const c10::optional<at::Tensor>& grad_loss, const c10::optional<at::Tensor>& grad_score, const at::Tensor& pooled,
    const at::Tensor& centers, const c10::optional<at::Tensor>& label, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& center_index, c10::SymIntArrayRef emb_sizes, c10::ScalarType emb_dtype,
    int64_t loss, double scale, double margin_bonafide, double margin_spoof, int64_t bonafide_label,
    int64_t score_rule, int64_t score_center, int64_t reduction) {
  const auto args = prepare_cosine_backward(
      grad_loss, grad_score, pooled, centers, label, lengths, center_index, emb_sizes, emb_dtype, loss,
      bonafide_label, score_rule, score_center, reduction);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, emb_dtype, "cosine_margin_loss_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    cosine_backward<scalar_t, acc_t>(
        args.grad_loss.defined() ? args.grad_loss.const_data_ptr<acc_t>() : nullptr,
        args.grad_score.defined() ? args.grad_score.const_data_ptr<acc_t>() : nullptr,
        args.pooled.const_data_ptr<acc_t>(), args.centers.const_data_ptr<acc_t>(), args.layout,
        cosine_epilogue<acc_t>(loss, scale, margin_bonafide, margin_spoof, bonafide_label, score_rule, score_center),
        static_cast<Reduction>(reduction), args.grad_emb.mutable_data_ptr<scalar_t>(),
        args.grad_centers.mutable_data_ptr<acc_t>());
  });
  return args.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(spoofloss, CPU, m) {
  m.impl("cosine_margin_loss", &cosine_margin_loss_cpu);
  m.impl("cosine_score", &cosine_score_cpu);
  m.impl("_cosine_margin_loss_backward", &cosine_margin_loss_backward_cpu);
}

}  // namespace spoofloss
