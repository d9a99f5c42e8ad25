// Per-utterance arithmetic shared by the CPU and the CUDA kernels.
//
// Everything here is scalar, inline and callable from host and device code, so
// the CPU tests exercise exactly the arithmetic the GPU runs. The kernels own
// the memory traffic (time pooling, dot products over D, writing gradients);
// this header owns what happens to one utterance once those reductions are
// done: norms and cosines, softplus and sigmoid, reading labels and lengths of
// any dtype, binary cross-entropy. The cosine-margin losses themselves are
// declared in cosine_losses.h.
//
// The cosine-margin family, for one utterance b with pooled embedding x [D] and
// centres c_k [D], k < C:
//   cos_k = (x . c_k) / (max(|x|, eps) * max(|c_k|, eps))     (F.normalize's eps)
//   loss  = epilogue(cos_0 .. cos_{C-1}, label)
// and with g_k = d loss / d cos_k (times the upstream gradient):
//   d loss / d x   = sum_k alpha_k c_k + beta x
//   d loss / d c_k = alpha_k x + (per-centre term, summed over the batch)
// where alpha_k = g_k / (|x| |c_k|) and beta = -(sum_k g_k cos_k) / |x|^2.
// A clamped norm (|x| < eps) is a constant, so its derivative term drops out.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace spoofloss {

enum class Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };

// F.normalize's default eps: norms below it are clamped to it.
constexpr double kNormEps = 1e-12;

namespace math {

// NAN (not numeric_limits) so that device code needs no relaxed constexpr.
template <typename T>
C10_HOST_DEVICE inline T quiet_nan() {
  return static_cast<T>(NAN);
}

// log1p(e) for e in [0, 1]. On the host, float32 goes through logf with
// Goldberg's correction, log1p(e) = log(u) * e / (u - 1) for u = fl(1 + e),
// accurate to a few ulp: glibc's log1pf is several times slower than its logf
// and was three quarters of the binary loss's CPU time. Device code and
// float64 keep log1p.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t log1p_unit(acc_t e) {
  using std::log1p;
#if !defined(__CUDA_ARCH__) && !defined(__HIP_DEVICE_COMPILE__)
  if constexpr (std::is_same_v<acc_t, float>) {
    const float u = 1.0f + e;
    if (u == 1.0f) return e;  // e under half an ulp of 1: log1p(e) = e to float precision
    return std::log(u) * (e / (u - 1.0f));
  }
#endif
  return log1p(e);
}

// log(1 + exp(-|x|)): the part of softplus (and of BCE with logits) that needs
// a transcendental; it lies in (0, log 2].
template <typename acc_t>
C10_HOST_DEVICE inline acc_t softplus_tail(acc_t x) {
  using std::exp;
  return log1p_unit(exp(-(x > acc_t(0) ? x : -x)));
}

// log(1 + exp(x)) without overflow for large x or cancellation for small x.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t softplus(acc_t x) {
  return (x > acc_t(0) ? x : acc_t(0)) + softplus_tail(x);
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t sigmoid(acc_t x) {
  using std::exp;
  // Both branches evaluate exp of a non-positive number: no overflow.
  if (x >= acc_t(0)) {
    return acc_t(1) / (acc_t(1) + exp(-x));
  }
  const acc_t e = exp(x);
  return e / (acc_t(1) + e);
}

// 1 / max(sqrt(sum_sq), eps), and whether the clamp was hit (a NaN norm is not
// clamped: it stays NaN and reaches this utterance's loss only).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t inverse_norm(acc_t sum_sq, bool* clamped) {
  using std::sqrt;
  const acc_t norm = sqrt(sum_sq);
  *clamped = norm < acc_t(kNormEps);
  return acc_t(1) / (*clamped ? acc_t(kNormEps) : norm);
}

// Reads element `index` of a label or lengths tensor of any real dtype as double,
// so one kernel serves int64, int32, bool, float, ... labels without a copy.
C10_HOST_DEVICE inline double load_as_double(const void* data, c10::ScalarType dtype, int64_t index) {
  switch (dtype) {
    case c10::ScalarType::Bool:
      return static_cast<const bool*>(data)[index] ? 1.0 : 0.0;
    case c10::ScalarType::Byte:
      return static_cast<double>(static_cast<const uint8_t*>(data)[index]);
    case c10::ScalarType::Char:
      return static_cast<double>(static_cast<const int8_t*>(data)[index]);
    case c10::ScalarType::Short:
      return static_cast<double>(static_cast<const int16_t*>(data)[index]);
    case c10::ScalarType::Int:
      return static_cast<double>(static_cast<const int32_t*>(data)[index]);
    case c10::ScalarType::Long:
      return static_cast<double>(static_cast<const int64_t*>(data)[index]);
    case c10::ScalarType::Half:
      return static_cast<double>(static_cast<float>(static_cast<const c10::Half*>(data)[index]));
    case c10::ScalarType::BFloat16:
      return static_cast<double>(static_cast<float>(static_cast<const c10::BFloat16*>(data)[index]));
    case c10::ScalarType::Float:
      return static_cast<double>(static_cast<const float*>(data)[index]);
    case c10::ScalarType::Double:
      return static_cast<const double*>(data)[index];
    default:
      return quiet_nan<double>();
  }
}

// A length as a frame count, or -1 when it lies outside [1, num_frames].
C10_HOST_DEVICE inline int64_t valid_length(double value, int64_t num_frames) {
  if (!(value >= 1.0) || value > static_cast<double>(num_frames)) return -1;
  return static_cast<int64_t>(value);
}

// The gradient that reaches one utterance's loss from the reduced loss.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t reduction_weight(Reduction reduction, const acc_t* grad_loss, int64_t b, int64_t batch) {
  switch (reduction) {
    case Reduction::kNone:
      return grad_loss[b];
    case Reduction::kMean:
      return grad_loss[0] / acc_t(batch);
    case Reduction::kSum:
    default:
      return grad_loss[0];
  }
}

// Binary cross-entropy with logits for one element, softplus(x) - t x, from
// the target t, its complement u = 1 - t and tail = log(1 + exp(-|x|)):
//   x > 0:   u x + tail      (the same as x - t x + tail)
//   x <= 0: -t x + tail
// Both terms are >= 0, so nothing cancels: a few ulp of relative accuracy for
// every logit and soft target (x - t x would lose |x| * ulp to rounding, 5e-5
// relative in float32 at x = 1131.8, t = 0.99921), exact for hard targets,
// and a confident, right logit (x = 15, t = 1) keeps its small loss
// log1p(exp(-15)). u comes separately because where t is itself a rounded
// 1 - label (bonafide_label 0), 1 - t would carry t's rounding error into
// the small u (see binary_target).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t binary_cross_entropy_from_tail(acc_t logit, acc_t target, acc_t complement, acc_t tail) {
  // one product of a selected weight: a select, not a branch (random signs mispredict)
  const acc_t weight = logit > acc_t(0) ? complement : -target;
  return weight * logit + tail;
}

// The same with u = 1 - t (exact for t in [0.5, 1]; within half an ulp of u
// below that).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t binary_cross_entropy(acc_t logit, acc_t target) {
  return binary_cross_entropy_from_tail(logit, target, acc_t(1) - target, softplus_tail(logit));
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t binary_cross_entropy(acc_t logit, acc_t target, acc_t complement) {
  return binary_cross_entropy_from_tail(logit, target, complement, softplus_tail(logit));
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t binary_cross_entropy_grad(acc_t logit, acc_t target) {
  return sigmoid(logit) - target;
}

// Class-weighted binary cross-entropy with logits,
//   w_b t softplus(-x) + w_s u softplus(x),
// from the weighted target a = w_b t, the weighted complement c = w_s u and
// tail = log(1 + exp(-|x|)), as binary_cross_entropy_from_tail:
//   x > 0:   c x + (a + c) tail
//   x <= 0: -a x + (a + c) tail
// (no cancellation: every term is >= 0). With two logits x is their
// difference, bona fide minus spoof, and this is torch's
// CrossEntropyLoss(weight) of the two classes (t, u the probabilities of
// bona fide and spoof). kZeroTermVanishes: a term whose coefficient is 0 is 0
// even where |x| is infinite (torch's cross-entropy of a hard target is 0
// when the other class's logit is -inf; 0 * inf would be NaN).
template <bool kZeroTermVanishes, typename acc_t>
C10_HOST_DEVICE inline acc_t weighted_binary_cross_entropy_from_tail(
    acc_t logit, acc_t weighted_target, acc_t weighted_complement, acc_t tail) {
  const acc_t slope = logit > acc_t(0) ? weighted_complement : -weighted_target;
  acc_t linear = slope * logit;
  if constexpr (kZeroTermVanishes) linear = slope == acc_t(0) ? acc_t(0) : linear;
  return linear + (weighted_target + weighted_complement) * tail;
}

// Its derivative with respect to x, (a + c) sigmoid(x) - a (sigmoid(x) - t
// without weights, where a + c = 1).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t weighted_binary_cross_entropy_grad_from_sigmoid(
    acc_t sigmoid_value, acc_t weighted_target, acc_t weighted_complement) {
  return (weighted_target + weighted_complement) * sigmoid_value - weighted_target;
}

// A (possibly soft) binary target in [0, 1] oriented so that 1 means bona fide;
// NaN when the label lies outside [0, 1].
template <typename acc_t>
C10_HOST_DEVICE inline acc_t bonafide_target(double label, int64_t bonafide_label) {
  if (!(label >= 0.0 && label <= 1.0)) return quiet_nan<acc_t>();
  return static_cast<acc_t>(bonafide_label == 1 ? label : 1.0 - label);
}

// The target and its complement 1 - target, each rounded once from the label
// (read as double), so both keep their relative precision: one of them is the
// label itself, the other 1 - label. NaN (both) outside [0, 1].
template <typename acc_t>
struct BinaryTarget {
  acc_t target;
  acc_t complement;
};

template <typename acc_t>
C10_HOST_DEVICE inline BinaryTarget<acc_t> binary_target(double label, int64_t bonafide_label) {
  if (!(label >= 0.0 && label <= 1.0)) return {quiet_nan<acc_t>(), quiet_nan<acc_t>()};
  const acc_t value = static_cast<acc_t>(label);
  const acc_t flipped = static_cast<acc_t>(1.0 - label);
  return bonafide_label == 1 ? BinaryTarget<acc_t>{value, flipped} : BinaryTarget<acc_t>{flipped, value};
}

}  // namespace math
}  // namespace spoofloss
