// The cosine-margin losses, each declared once.
//
// Every loss of the family shares the kernels: pool emb over the valid frames,
// take the cosines cos_k of the pooled x with the C centres (scalar_math.h), then run
// the loss's epilogue on cos [C] for one utterance. An epilogue is a struct
// below with
//   loss(cos, C, target, params, weight, grad) -> the utterance's loss, and
//       when grad is not null, grad[k] += weight * d loss / d cos_k;
// and SPOOFLOSS_COSINE_LOSSES is the table that names each struct, its centre
// count, its label classes and its default score rule. The loss-kind enum, the
// validation and its messages, build_info() and the kernels' dispatch are all
// generated from that table: a new loss is a struct here and a line in the
// table, never a new kernel.
//
// Scores are separate: a ScoreRule turns cos [C] into the utterance's score
// (and its derivative), for the loss ops' score output and for the score op.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "layout.h"
#include "scalar_math.h"

namespace spoofloss {

// The most centres a loss may have: cos [C] and its gradient live in a block's
// shared memory on the GPU (2 * C * 8 bytes of 48 KiB for float64).
constexpr int64_t kMaxCenters = 1024;

// What an utterance's label means to a loss: two classes (bona fide and spoof,
// whatever the number of centres), or one class per centre (centre k belongs to
// class k; the bona fide class is one of them).
enum class LabelClasses : int64_t { kTwo = 0, kOnePerCenter = 1 };

// How an utterance's score is formed from its cosines. Higher is more bona fide.
enum class ScoreRule : int64_t {
  kCenterCosine = 0,     // cos to the score centre (AM: the bona fide class's centre; OC: the one centre)
  kNearestCenter = 1,    // the largest cosine: the nearest of several bona fide centres
  kLogPosterior = 2,     // log softmax_k(s cos_k) at the score centre: the posterior AIR-ASVspoof and NII rank by
  kUtteranceCenter = 3,  // cos to a centre named per utterance (an enrolled speaker's); none named: the nearest
};
constexpr int64_t kScoreRuleCount = 4;

template <typename acc_t>
struct LossParams {
  acc_t scale;             // s / alpha: the logit scale
  acc_t margin_bonafide;   // the margin of the bona fide class (AM: m; OC: m_real)
  acc_t margin_spoof;      // the margin of the other classes (AM: m; OC: m_fake)
  int64_t bonafide_label;  // the label value (class index) of bona fide
};

// One utterance's label as the epilogue sees it: a class index (-1: the label
// was not a valid class, the loss is NaN), and a centre the utterance is tied
// to (-1: none given).
struct UtteranceTarget {
  int64_t label;
  int64_t center;
};

namespace losses {

// Adds weight * value to grad[k] when there is a gradient to form.
template <typename acc_t>
C10_HOST_DEVICE inline void add_grad(acc_t* grad, int64_t k, acc_t weight, acc_t value) {
  if (grad != nullptr) grad[k] += weight * value;
}

// Cross-entropy of class y over logits z_k = s * cos_k - s * m * [k == y]
// (additive margin), C >= 2, computed as log(1 + sum_{k != y} exp(z_k - z_y))
// shifted by the largest gap: no cancellation, so a loss of 1e-9 keeps its
// digits (lse(z) - z_y would not), and no overflow at any scale.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t margin_cross_entropy(
    const acc_t* cos, int64_t C, int64_t y, acc_t target_logit, acc_t scale, acc_t weight, acc_t* grad) {
  using std::exp;
  using std::log;
  using std::log1p;
  acc_t largest = acc_t(0);  // max(0, max_{k != y} z_k - z_y)
  for (int64_t k = 0; k < C; ++k) {
    if (k == y) continue;
    const acc_t gap = scale * cos[k] - target_logit;
    largest = gap > largest ? gap : largest;
  }
  acc_t others = acc_t(0);  // sum_{k != y} exp(z_k - z_y - largest)
  for (int64_t k = 0; k < C; ++k) {
    if (k != y) others += exp(scale * cos[k] - target_logit - largest);
  }
  const acc_t loss = largest > acc_t(0) ? largest + log(exp(-largest) + others) : log1p(others);
  if (grad != nullptr) {
    // d loss / d z_k = p_k for k != y and p_y - 1 = -sum_{k != y} p_k for y,
    // with p_k = exp(z_k - z_y - loss): no 1 - p_y to cancel. d z / d cos = s.
    acc_t others_probability = acc_t(0);
    for (int64_t k = 0; k < C; ++k) {
      if (k == y) continue;
      const acc_t p = exp(scale * cos[k] - target_logit - loss);
      others_probability += p;
      grad[k] += weight * scale * p;
    }
    grad[y] += weight * -scale * others_probability;
  }
  return loss;
}

}  // namespace losses

// AM-softmax (CosFace; Wang et al. 2018): cross-entropy over the C classes of
// s * (cos_k - m [k == y]), m = margin_bonafide for the bona fide class and
// margin_spoof for the others.
struct AMSoftmax {
  template <typename acc_t>
  C10_HOST_DEVICE static acc_t loss(
      const acc_t* cos, int64_t C, UtteranceTarget t, const LossParams<acc_t>& p, acc_t weight, acc_t* grad) {
    const int64_t y = t.label;
    const acc_t margin = y == p.bonafide_label ? p.margin_bonafide : p.margin_spoof;
    if (C == 2) {
      // The exact two-class form, softplus(z_other - z_y): the derivative in
      // z_other is sigmoid(z_other - z_y).
      const int64_t other = 1 - y;
      const acc_t gap = p.scale * (cos[other] - (cos[y] - margin));
      const acc_t prob_other = math::sigmoid(gap);
      losses::add_grad(grad, other, weight, p.scale * prob_other);
      losses::add_grad(grad, y, weight, -p.scale * prob_other);
      return math::softplus(gap);
    }
    return losses::margin_cross_entropy(cos, C, y, p.scale * (cos[y] - margin), p.scale, weight, grad);
  }
};

// One-class softmax (Zhang, Jiang and Duan, IEEE SPL 2021), one centre:
// softplus(alpha (m_real - cos)) for bona fide, softplus(alpha (cos - m_fake))
// for spoof.
struct OCSoftmax {
  template <typename acc_t>
  C10_HOST_DEVICE static acc_t loss(
      const acc_t* cos, int64_t /*C*/, UtteranceTarget t, const LossParams<acc_t>& p, acc_t weight, acc_t* grad) {
    const bool bonafide = t.label == p.bonafide_label;
    const acc_t sign = bonafide ? acc_t(-1) : acc_t(1);
    const acc_t margin = bonafide ? p.margin_bonafide : p.margin_spoof;
    const acc_t arg = p.scale * sign * (cos[0] - margin);
    losses::add_grad(grad, 0, weight, p.scale * sign * math::sigmoid(arg));
    return math::softplus(arg);
  }
};

// --------------------------------------------------------------------------- //
// AAM-softmax (ArcFace), P2SGrad and multi-centre one-class softmax (SAMO)
// --------------------------------------------------------------------------- //

namespace losses {

// The floor under 1 - c^2 where the angular margin takes sqrt(1 - c^2) = sin
// theta. Near c = 1 a cosine rounded to float32 no longer resolves theta (the
// float32 below 1 is 1 - 2^-24, i.e. 1 - c^2 = 2^-23 = 1.19e-7, theta = 3.5e-4),
// and the derivative of cos(theta + m) in c, cos m + c sin m / sin theta, grows
// without bound there; so sin theta is taken as sqrt(max(1 - c^2, floor)).
// That keeps the value finite and continuous, the derivative finite (at most
// cos m + sin m / sqrt(floor), 199 at m = 0.2), and a cosine rounded above 1
// harmless. The floor covers the float32 cosines within 8 ulps of +-1 (1 - c^2
// < 1e-6 where 1 - |c| < 5e-7): an embedding parallel to a centre, whose float32
// cosine comes out 1 - 2^-24 instead of 1, then gets the value and slope of
// c = 1 up to c's own rounding, rather than a point on the steep part of the
// curve (a floor below 2^-23 moved such a loss by 6e-4 at s = 30). Only theta
// < 1e-3 rad (0.057 degrees) is affected, where the value moves by at most
// sin m * sqrt(floor) (2.0e-4 at m = 0.2).
// spoofloss.reference (ANGULAR_SINE_SQUARED_FLOOR) uses the same number.
constexpr double kAngularSineSquaredFloor = 1e-6;

// cos(theta + m) as a function of c = cos theta (no acos), and its derivative in c.
template <typename acc_t>
struct ShiftedCosine {
  acc_t value;
  acc_t slope;
};

template <typename acc_t>
C10_HOST_DEVICE inline ShiftedCosine<acc_t> shifted_cosine(acc_t c, acc_t cos_m, acc_t sin_m) {
  using std::sqrt;
  const acc_t floor = acc_t(kAngularSineSquaredFloor);
  const acc_t sine_sq = acc_t(1) - c * c;
  // A NaN cosine fails the test and stays NaN in the value.
  const bool exact = sine_sq >= floor;
  const acc_t sine = sqrt(exact ? sine_sq : floor);
  return {c * cos_m - sine * sin_m, exact ? cos_m + c * sin_m / sine : cos_m};
}

// cos m and sin m of a margin (apart, because the epilogues' array of cosines
// is named cos and would hide std::cos there).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t cosine_of(acc_t angle) {
  using std::cos;
  return cos(angle);
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t sine_of(acc_t angle) {
  using std::sin;
  return sin(angle);
}

// The index of the largest of cos [C], the first of equals; a NaN counts as
// the largest (the first NaN), so a NaN centre or embedding makes the loss NaN
// instead of being passed over. torch.argmax decides both the same way.
template <typename acc_t>
C10_HOST_DEVICE inline int64_t nearest_center(const acc_t* cos, int64_t C) {
  int64_t nearest = 0;
  for (int64_t k = 1; k < C; ++k) {
    if (cos[nearest] != cos[nearest]) break;  // a NaN: the first one stays
    if (cos[k] > cos[nearest] || cos[k] != cos[k]) nearest = k;
  }
  return nearest;
}

}  // namespace losses

// AAM-softmax (ArcFace: Deng et al., CVPR 2019; SpeechBrain's
// AdditiveAngularMargin, WeSpeaker's ArcMarginProduct): cross-entropy over the C
// classes of the logits s * phi(cos_y) for the target class y and s * cos_k for
// the others, with m = margin_bonafide for the bona fide class and margin_spoof
// for the others, and
//   phi(c) = cos(theta + m)        where c > cos(pi - m) = -cos m (theta + m < pi),
//          = c - m sin m           elsewhere (the conventional fallback: theta + m
//                                  would pass pi, where cos(theta + m) turns back up);
// with easy margin (kEasyMargin): phi(c) = cos(theta + m) where c > 0, else c.
// cos(theta + m) = c cos m - sin theta sin m, sin theta as in shifted_cosine.
// Each class's threshold is strict (c == threshold takes the fallback), as the
// published copies' torch.where(cosine > th, ...).
template <bool kEasyMargin>
struct AdditiveAngularMargin {
  template <typename acc_t>
  C10_HOST_DEVICE static acc_t loss(
      const acc_t* cos, int64_t C, UtteranceTarget t, const LossParams<acc_t>& p, acc_t weight, acc_t* grad) {
    using std::exp;
    const int64_t y = t.label;
    const acc_t margin = y == p.bonafide_label ? p.margin_bonafide : p.margin_spoof;
    const acc_t cos_m = losses::cosine_of(margin);
    const acc_t sin_m = losses::sine_of(margin);
    const acc_t c = cos[y];
    acc_t phi = c;  // the easy margin's value below 0, and its slope 1
    acc_t slope = acc_t(1);
    const bool shifted = kEasyMargin ? c > acc_t(0) : c > -cos_m;
    if (shifted) {
      const auto angle = losses::shifted_cosine(c, cos_m, sin_m);
      phi = angle.value;
      slope = angle.slope;
    } else if (!kEasyMargin) {
      phi = c - margin * sin_m;
    }
    const acc_t target_logit = p.scale * phi;
    const acc_t loss = losses::margin_cross_entropy<acc_t>(cos, C, y, target_logit, p.scale, weight, nullptr);
    if (grad != nullptr) {
      // d loss / d z_k = p_k for k != y, -sum_{k != y} p_k for y (as in
      // margin_cross_entropy); d z_k / d cos_k = s, d z_y / d cos_y = s phi'(c).
      acc_t others_probability = acc_t(0);
      for (int64_t k = 0; k < C; ++k) {
        if (k == y) continue;
        const acc_t prob = exp(p.scale * cos[k] - target_logit - loss);
        others_probability += prob;
        grad[k] += weight * p.scale * prob;
      }
      grad[y] += weight * -p.scale * slope * others_probability;
    }
    return loss;
  }
};
using AAMSoftmax = AdditiveAngularMargin<false>;
using AAMSoftmaxEasyMargin = AdditiveAngularMargin<true>;

// P2SGrad (Zhang et al., CVPR 2019), as NII's ASVspoof 2021 LFCC-LCNN baseline
// trains it (project-NN-Pytorch-scripts, core_modules/p2sgrad.py: MSELoss
// between the cosines to the C class centres and the one-hot target, averaged
// over the batch and the classes): the utterance's loss is
//   (1 / C) sum_k (cos_k - [k == y])^2,
// so reduction "mean" gives NII's number. (NII clamps the cosines to [-1, 1];
// here they are not clamped: the square is smooth everywhere and a cosine only
// leaves [-1, 1] by rounding.)
struct P2SGrad {
  template <typename acc_t>
  C10_HOST_DEVICE static acc_t loss(
      const acc_t* cos, int64_t C, UtteranceTarget t, const LossParams<acc_t>& /*p*/, acc_t weight, acc_t* grad) {
    const acc_t inv_classes = acc_t(1) / static_cast<acc_t>(C);
    acc_t sum_sq = acc_t(0);
    for (int64_t k = 0; k < C; ++k) {
      const acc_t error = cos[k] - (k == t.label ? acc_t(1) : acc_t(0));
      sum_sq += error * error;
      losses::add_grad(grad, k, weight, acc_t(2) * error * inv_classes);
    }
    return sum_sq * inv_classes;
  }
};

// SAMO: speaker attractor multi-centre one-class softmax (Ding, Zhang and Duan,
// ICASSP 2023; arXiv:2211.02718; the authors' samo/loss.py, class SAMO). The C
// centres are bona fide attractors (one per training speaker in SAMO). The
// one-class softmax of OCSoftmax is taken at one cosine cos_j:
//   bona fide: softplus(alpha (m_real - cos_j)), j = the utterance's own centre
//     when center_index names one, else the nearest centre (largest cosine);
//   spoof: softplus(alpha (cos_j - m_fake)), j = the nearest centre: pushed from
//     every attractor, the closest one counts (its centre index is ignored).
// Only centre j gets a gradient. Ties: the first of equal cosines.
struct MultiCenterOCSoftmax {
  template <typename acc_t>
  C10_HOST_DEVICE static acc_t loss(
      const acc_t* cos, int64_t C, UtteranceTarget t, const LossParams<acc_t>& p, acc_t weight, acc_t* grad) {
    const bool own_center = t.label == p.bonafide_label && t.center >= 0;
    const int64_t j = own_center ? t.center : losses::nearest_center(cos, C);
    return OCSoftmax::loss<acc_t>(cos + j, 1, t, p, weight, grad == nullptr ? nullptr : grad + j);
  }
};

// --------------------------------------------------------------------------- //
// The table. X(Struct, name, fewest centres, most centres, label classes, default score rule)
// --------------------------------------------------------------------------- //
#define SPOOFLOSS_COSINE_LOSSES(X)                                                                  \
  X(AMSoftmax, "am_softmax", 2, kMaxCenters, LabelClasses::kOnePerCenter, ScoreRule::kCenterCosine)     \
  X(OCSoftmax, "oc_softmax", 1, 1, LabelClasses::kTwo, ScoreRule::kCenterCosine)                        \
  X(AAMSoftmax, "aam_softmax", 2, kMaxCenters, LabelClasses::kOnePerCenter, ScoreRule::kCenterCosine)   \
  X(AAMSoftmaxEasyMargin, "aam_softmax_easy_margin", 2, kMaxCenters, LabelClasses::kOnePerCenter,       \
    ScoreRule::kCenterCosine)                                                                           \
  X(P2SGrad, "p2sgrad", 2, kMaxCenters, LabelClasses::kOnePerCenter, ScoreRule::kCenterCosine)          \
  X(MultiCenterOCSoftmax, "samo", 1, kMaxCenters, LabelClasses::kTwo, ScoreRule::kNearestCenter)

enum class LossKind : int64_t {
#define SPOOFLOSS_LOSS_ENUM(Struct, ...) k##Struct,
  SPOOFLOSS_COSINE_LOSSES(SPOOFLOSS_LOSS_ENUM)
#undef SPOOFLOSS_LOSS_ENUM
};

struct LossInfo {
  const char* name;
  int64_t min_centers;
  int64_t max_centers;
  LabelClasses classes;
  ScoreRule default_score;
};

// Host-side facts of each loss, indexed by LossKind.
constexpr LossInfo kLossInfo[] = {
#define SPOOFLOSS_LOSS_INFO(Struct, name, min_centers, max_centers, classes, score) \
  LossInfo{name, min_centers, max_centers, classes, score},
    SPOOFLOSS_COSINE_LOSSES(SPOOFLOSS_LOSS_INFO)
#undef SPOOFLOSS_LOSS_INFO
};
constexpr int64_t kLossCount = sizeof(kLossInfo) / sizeof(kLossInfo[0]);

// What the kernels run per utterance: the loss (if any) and the score rule.
template <typename acc_t>
struct CosineEpilogue {
  int64_t loss;  // a LossKind, or kNoLoss (the score op and its backward)
  LossParams<acc_t> params;
  ScoreRule score_rule;
  int64_t score_center;  // the centre of kCenterCosine and kLogPosterior
};
constexpr int64_t kNoLoss = -1;

// Names of the score rules, indexed by ScoreRule (spoofloss.ops reads them).
constexpr const char* kScoreRuleNames[kScoreRuleCount] = {
    "center_cosine", "nearest_center", "log_posterior", "utterance_center"};

namespace math {

// The number of classes an utterance's label may take for a loss with C centres.
C10_HOST_DEVICE inline int64_t label_classes(LabelClasses classes, int64_t num_centers) {
  return classes == LabelClasses::kOnePerCenter ? num_centers : 2;
}

// A hard label as a class index in [0, classes), or -1 (2 of 2 classes, -1,
// 0.5, NaN).
C10_HOST_DEVICE inline int64_t class_index(double value, int64_t classes) {
  if (!(value >= 0.0) || value >= static_cast<double>(classes)) return -1;
  const auto index = static_cast<int64_t>(value);
  return static_cast<double>(index) == value ? index : -1;
}

// Utterance b's target: its label's class (0 for the score op, which has no
// label; -1 when invalid) and the centre it names (-1 for none; -2 when the
// index is neither -1 nor a centre, which makes the utterance NaN like an
// invalid label).
C10_HOST_DEVICE inline UtteranceTarget read_target(const CosineLayout& layout, int64_t b) {
  UtteranceTarget target{0, -1};
  if (layout.label != nullptr) {
    target.label = class_index(load_as_double(layout.label, layout.label_dtype, b * layout.label_stride),
                               layout.label_classes);
  }
  if (layout.center_index != nullptr) {
    const double value = load_as_double(layout.center_index, layout.center_index_dtype, b * layout.center_index_stride);
    target.center = value == -1.0 ? -1 : class_index(value, layout.num_centers);
    if (target.center < 0 && value != -1.0) target.center = -2;
  }
  return target;
}

C10_HOST_DEVICE inline bool valid_target(const UtteranceTarget& target) {
  return target.label >= 0 && target.center >= -1;
}

// The loss of one utterance, and weight * d loss / d cos_k added to grad [C]
// when it is not null. An invalid label gives NaN, in the gradient too.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t cosine_loss(
    LossKind kind, const acc_t* cos, int64_t C, UtteranceTarget target, const LossParams<acc_t>& params,
    acc_t weight, acc_t* grad) {
  if (!valid_target(target)) {
    if (grad != nullptr) {
      for (int64_t k = 0; k < C; ++k) grad[k] = quiet_nan<acc_t>();
    }
    return quiet_nan<acc_t>();
  }
  switch (kind) {
#define SPOOFLOSS_LOSS_CASE(Struct, ...) \
  case LossKind::k##Struct:              \
    return Struct::loss<acc_t>(cos, C, target, params, weight, grad);
    SPOOFLOSS_COSINE_LOSSES(SPOOFLOSS_LOSS_CASE)
#undef SPOOFLOSS_LOSS_CASE
  }
  return quiet_nan<acc_t>();
}

// The score of one utterance under `rule`, and weight * d score / d cos_k
// added to grad [C] when it is not null. `center` is the score centre (the op's
// argument) or, for kUtteranceCenter, the utterance's own centre (-1 if none:
// the nearest centre; -2 if invalid: NaN). `scale` is s of kLogPosterior.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t cosine_score(
    ScoreRule rule, const acc_t* cos, int64_t C, int64_t center, acc_t scale, acc_t weight, acc_t* grad) {
  using std::exp;
  using std::log;
  switch (rule) {
    case ScoreRule::kNearestCenter: {
      const int64_t nearest = losses::nearest_center(cos, C);  // first of equals
      losses::add_grad(grad, nearest, weight, acc_t(1));
      return cos[nearest];
    }
    case ScoreRule::kLogPosterior: {
      // s cos_c - lse_k(s cos_k) = -log(1 + sum_{k != c} exp(s (cos_k - cos_c))): the
      // cross-entropy of class c with no margin, negated.
      const acc_t loss = losses::margin_cross_entropy(cos, C, center, scale * cos[center], scale, -weight, grad);
      return -loss;
    }
    case ScoreRule::kUtteranceCenter:
      // An utterance that names no centre (-1) gets the nearest centre's
      // cosine, as SAMO scores a trial whose speaker has no attractor; an
      // invalid index (-2) stays NaN below.
      if (center == -1) center = losses::nearest_center(cos, C);
      [[fallthrough]];
    case ScoreRule::kCenterCosine:
    default:
      if (center < 0 || center >= C) {
        if (grad != nullptr) {
          for (int64_t k = 0; k < C; ++k) grad[k] = quiet_nan<acc_t>();
        }
        return quiet_nan<acc_t>();
      }
      losses::add_grad(grad, center, weight, acc_t(1));
      return cos[center];
  }
}

// The score of utterance b (see cosine_score): the rule's centre is the
// utterance's own for kUtteranceCenter.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t utterance_score(
    const CosineEpilogue<acc_t>& epilogue, const acc_t* cos, int64_t C, const UtteranceTarget& target, acc_t weight,
    acc_t* grad) {
  const int64_t center = epilogue.score_rule == ScoreRule::kUtteranceCenter ? target.center : epilogue.score_center;
  return cosine_score(epilogue.score_rule, cos, C, center, epilogue.params.scale, weight, grad);
}

// Derivative coefficients of one utterance, from g [C] = d loss / d cos_k
// (upstream included): d loss / d x = sum_k alpha_k c_k + beta x with
// alpha_k = g_k / (|x| |c_k|) and beta = -(sum_k g_k cos_k) / |x|^2 (0 when |x|
// was clamped: the norm is then a constant). center_sq [C] holds |c_k|^2.
// Writes alpha [C]; returns beta.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t pooled_gradient(
    const acc_t* g, const acc_t* cos, const acc_t* center_sq, acc_t inv_norm, bool norm_clamped, int64_t C,
    acc_t* alpha) {
  acc_t g_dot_cos = acc_t(0);
  for (int64_t k = 0; k < C; ++k) {
    bool center_clamped;
    alpha[k] = g[k] * inv_norm * inverse_norm(center_sq[k], &center_clamped);
    g_dot_cos += g[k] * cos[k];
  }
  return norm_clamped ? acc_t(0) : -g_dot_cos * inv_norm * inv_norm;
}

// The radial part of centre k's gradient: -(sum_b g_bk cos_bk) c_k / |c_k|^2
// is this scale times c_k (0 when |c_k| was clamped).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t radial_scale(acc_t sum_g_cos, acc_t center_sq) {
  bool clamped;
  const acc_t inv = inverse_norm(center_sq, &clamped);
  return clamped ? acc_t(0) : -sum_g_cos * inv * inv;
}

}  // namespace math
}  // namespace spoofloss
