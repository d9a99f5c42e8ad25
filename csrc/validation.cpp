#include "validation.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string>

namespace spoofloss {
namespace {

bool is_supported_float(c10::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Labels and lengths are read through math::load_as_double, which knows these.
bool is_loadable(c10::ScalarType t) {
  switch (t) {
    case at::kBool:
    case at::kByte:
    case at::kChar:
    case at::kShort:
    case at::kInt:
    case at::kLong:
    case at::kHalf:
    case at::kBFloat16:
    case at::kFloat:
    case at::kDouble:
      return true;
    default:
      return false;
  }
}

void check_reduction(int64_t reduction) {
  TORCH_CHECK_VALUE(
      reduction >= 0 && reduction <= static_cast<int64_t>(Reduction::kSum),
      "reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
}

std::string loss_names() {
  std::string names;
  for (int64_t k = 0; k < kLossCount; ++k) {
    names += (k ? ", " : "") + std::to_string(k) + " (" + kLossInfo[k].name + ")";
  }
  return names;
}

void check_same_device(const at::Tensor& reference, const char* reference_name, const at::Tensor& t, const char* name) {
  TORCH_CHECK(
      t.device() == reference.device(), "spoofloss: ", name, " is on ", t.device(), " but ", reference_name, " is on ",
      reference.device(), "; move them to one device");
}

void check_label(const at::Tensor& label, const char* owner_name, const at::Tensor& owner, int64_t batch) {
  check_same_device(owner, owner_name, label, "label");
  TORCH_CHECK_VALUE(
      is_loadable(label.scalar_type()), "label must hold class indices in an integer, bool or float dtype, got dtype ",
      label.scalar_type());
  const bool column = label.dim() == 2 && label.size(1) == 1;
  TORCH_CHECK_VALUE(
      label.dim() == 1 || column, "label must have shape [B] or [B, 1], got shape ", label.sizes());
  TORCH_CHECK_VALUE(
      label.size(0) == batch, "label has batch size ", label.size(0), " but ", owner_name, " has batch size ", batch,
      " (label shape ", label.sizes(), ")");
}

void check_lengths(const at::Tensor& lengths, const at::Tensor& owner, const char* owner_name, int64_t batch) {
  check_same_device(owner, owner_name, lengths, "lengths");
  const auto t = lengths.scalar_type();
  TORCH_CHECK_VALUE(
      at::isIntegralType(t, /*includeBool=*/false), "lengths must be an integer tensor of frame counts, got dtype ", t);
  TORCH_CHECK_VALUE(
      lengths.dim() == 1 && lengths.size(0) == batch, "lengths must have shape [", batch,
      "] (one frame count per utterance), got shape ", lengths.sizes());
}

void check_center_index(const at::Tensor& center_index, const at::Tensor& owner, const char* owner_name, int64_t batch) {
  check_same_device(owner, owner_name, center_index, "center_index");
  TORCH_CHECK_VALUE(
      at::isIntegralType(center_index.scalar_type(), /*includeBool=*/false),
      "center_index must be an integer tensor of centre indices (-1 for none), got dtype ", center_index.scalar_type());
  TORCH_CHECK_VALUE(
      center_index.dim() == 1 && center_index.size(0) == batch, "center_index must have shape [", batch,
      "] (one centre index per utterance), got shape ", center_index.sizes());
}

void check_centers(const at::Tensor& centers, int64_t dim) {
  TORCH_CHECK_VALUE(
      is_supported_float(centers.scalar_type()), "centers must be float32, float64, float16 or bfloat16, got dtype ",
      centers.scalar_type());
  TORCH_CHECK_VALUE(centers.dim() == 2, "centers must have shape [C, D], got shape ", centers.sizes());
  TORCH_CHECK_VALUE(
      centers.size(1) == dim, "centers have enc_dim ", centers.size(1), " but emb has D = ", dim,
      " (centers shape ", centers.sizes(), "); set enc_dim to the encoder's output size");
  TORCH_CHECK_VALUE(
      centers.size(0) >= 1 && centers.size(0) <= kMaxCenters, "centers must hold 1 to ", kMaxCenters,
      " centres, got shape ", centers.sizes());
}

// The ops' integer arguments against the loss table (cosine_losses.h).
// has_label: the loss op (and its backward) carry a label; the score op does not.
void check_cosine_options(
    int64_t loss, bool has_label, const at::Tensor& centers, bool has_center_index, int64_t bonafide_label,
    int64_t score_rule, int64_t score_center, int64_t reduction) {
  check_reduction(reduction);
  const int64_t num_centers = centers.size(0);
  if (loss == kNoLoss) {
    TORCH_CHECK_VALUE(!has_label, "label must be None without a loss (loss = ", kNoLoss, ", the score), got a tensor");
  } else {
    TORCH_CHECK_VALUE(loss >= 0 && loss < kLossCount, "loss must be one of ", loss_names(), ", got ", loss);
    TORCH_CHECK_VALUE(has_label, "label is required for the loss");
    const LossInfo& info = kLossInfo[loss];
    TORCH_CHECK_VALUE(
        num_centers >= info.min_centers && num_centers <= info.max_centers, info.name, " needs ",
        info.min_centers == info.max_centers ? std::to_string(info.min_centers)
                                             : std::to_string(info.min_centers) + " to " +
                                                 std::to_string(info.max_centers),
        " centres, got centers of shape ", centers.sizes());
    const int64_t classes = math::label_classes(info.classes, num_centers);
    TORCH_CHECK_VALUE(
        bonafide_label >= 0 && bonafide_label < classes, "bonafide_label must lie in [0, ", classes, ") for ",
        info.name, " with ", num_centers, " centres, got ", bonafide_label);
  }
  TORCH_CHECK_VALUE(
      score_rule >= 0 && score_rule < kScoreRuleCount, "score_rule must be one of 0 (center cosine), 1 (nearest "
      "center), 2 (log posterior), 3 (utterance center), got ", score_rule);
  TORCH_CHECK_VALUE(
      score_center >= 0 && score_center < num_centers, "score_center (center_index of the score) must lie in [0, ",
      num_centers, "), got ", score_center);
  TORCH_CHECK_VALUE(
      static_cast<ScoreRule>(score_rule) != ScoreRule::kUtteranceCenter || has_center_index,
      "score_rule 3 (utterance center) needs center_index, one centre per utterance");
}

// The upstream gradient of a loss (or a score): [B] for reduction none, one
// element otherwise, in a floating dtype (converted to the compute dtype).
void check_grad_loss(const at::Tensor& grad, const char* name, int64_t reduction, int64_t batch) {
  TORCH_CHECK_VALUE(
      is_supported_float(grad.scalar_type()), name, " must be float32, float64, float16 or bfloat16, got dtype ",
      grad.scalar_type());
  if (reduction == static_cast<int64_t>(Reduction::kNone)) {
    TORCH_CHECK_VALUE(
        grad.dim() == 1 && grad.size(0) == batch, name, " must have shape [", batch, "] for reduction none, got ",
        grad.sizes());
  } else {
    TORCH_CHECK_VALUE(grad.numel() == 1, name, " must be a scalar for a reduced loss, got ", grad.sizes());
  }
}

}  // namespace

void check_cosine_inputs(
    const at::Tensor& emb,
    const at::Tensor& centers,
    const c10::optional<at::Tensor>& label,
    const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& center_index,
    int64_t loss,
    int64_t bonafide_label,
    int64_t score_rule,
    int64_t score_center,
    int64_t reduction) {
  TORCH_CHECK_VALUE(
      emb.dim() == 2 || emb.dim() == 3, "emb must have shape [B, T, D] or [B, D], got ", emb.dim(), "-D shape ",
      emb.sizes());
  TORCH_CHECK_VALUE(
      is_supported_float(emb.scalar_type()), "emb must be float32, float64, float16 or bfloat16, got dtype ",
      emb.scalar_type());
  const int64_t batch = emb.size(0);
  TORCH_CHECK_VALUE(batch > 0, "emb has an empty batch (shape ", emb.sizes(), "); a loss needs at least one utterance");
  TORCH_CHECK_VALUE(emb.size(-1) > 0, "emb has D = 0 (shape ", emb.sizes(), ")");
  if (emb.dim() == 3) {
    TORCH_CHECK_VALUE(emb.size(1) > 0, "emb has T = 0 frames (shape ", emb.sizes(), ")");
  }
  check_same_device(emb, "emb", centers, "centers");
  check_centers(centers, emb.size(-1));
  check_cosine_options(
      loss, label.has_value(), centers, center_index.has_value(), bonafide_label, score_rule, score_center, reduction);
  if (label.has_value()) check_label(*label, "emb", emb, batch);
  if (lengths.has_value()) check_lengths(*lengths, emb, "emb", batch);
  if (center_index.has_value()) check_center_index(*center_index, emb, "emb", batch);
}

namespace {

// Label values are class indices (torch's hard targets) in an integer or bool
// dtype, probabilities of label 1 (soft targets) in a floating dtype.
bool holds_class_indices(c10::ScalarType t) {
  return at::isIntegralType(t, /*includeBool=*/true);
}

void check_binary_inputs(
    const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label, int64_t reduction,
    c10::optional<c10::ArrayRef<double>> class_weight, int64_t num_logits) {
  check_reduction(reduction);
  TORCH_CHECK_VALUE(
      num_logits == 1 || num_logits == 2, "num_logits must be 1 (one logit per label) or 2 (the logits of label 0 "
      "and label 1 per label), got ", num_logits);
  TORCH_CHECK_VALUE(
      is_supported_float(pred.scalar_type()), "pred must be float32, float64, float16 or bfloat16 logits, got dtype ",
      pred.scalar_type());
  TORCH_CHECK_VALUE(pred.numel() > 0, "pred is empty (shape ", pred.sizes(), "); a loss needs at least one logit");
  if (num_logits == 2) {
    TORCH_CHECK_VALUE(
        pred.dim() == 2 && pred.size(1) == 2, "pred must have shape [B, 2] (the logits of label 0 and label 1) with "
        "num_logits = 2, got shape ", pred.sizes());
  }
  check_same_device(pred, "pred", label, "label");
  TORCH_CHECK_VALUE(
      is_loadable(label.scalar_type()), "label must hold values in [0, 1] in an integer, bool or float dtype, got dtype ",
      label.scalar_type());
  const int64_t labels = pred.numel() / num_logits;
  if (num_logits == 2) {
    TORCH_CHECK_VALUE(
        label.numel() == labels, "label has ", label.numel(), " elements (shape ", label.sizes(), ") but pred has ",
        labels, " rows (shape ", pred.sizes(), "); pred holds two logits per label");
  } else {
    TORCH_CHECK_VALUE(
        label.numel() == labels, "label has ", label.numel(), " elements (shape ", label.sizes(), ") but pred has ",
        pred.numel(), " (shape ", pred.sizes(), "); pred holds one logit per label");
  }
  TORCH_CHECK_VALUE(bonafide_label == 0 || bonafide_label == 1, "bonafide_label must be 0 or 1, got ", bonafide_label);
  if (class_weight.has_value()) {
    TORCH_CHECK_VALUE(
        class_weight->size() == 2, "class_weight must hold two weights (of label 0 and of label 1), got ",
        class_weight->size(), ": ", *class_weight);
    for (size_t k = 0; k < 2; ++k) {
      const double w = (*class_weight)[k];
      TORCH_CHECK_VALUE(
          std::isfinite(w) && w >= 0.0, "class_weight[", k, "] (the weight of label ", k,
          ") must be a finite number >= 0, got ", w);
    }
  }
}

// Whether the total weight (what the mean divides by) depends on the labels:
// torch's CrossEntropyLoss(weight) of class indices divides by sum_i w_{y_i}.
bool total_weight_from_labels(const at::Tensor& label, c10::optional<c10::ArrayRef<double>> class_weight, int64_t num_logits) {
  return num_logits == 2 && class_weight.has_value() && holds_class_indices(label.scalar_type());
}

BinaryArgs prepare_binary(
    const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label,
    c10::optional<c10::ArrayRef<double>> class_weight, int64_t num_logits) {
  BinaryArgs args;
  args.pred = num_logits == 2 ? pred : pred.contiguous();
  args.label = label.contiguous();
  BinaryLayout& layout = args.layout;
  layout.numel = pred.numel() / num_logits;
  layout.label = args.label.const_data_ptr();
  layout.label_dtype = label.scalar_type();
  layout.bonafide_label = bonafide_label;
  layout.num_logits = num_logits;
  if (num_logits == 2) {
    layout.pred_stride_row = pred.stride(0);
    layout.pred_stride_class = pred.stride(1);
  }
  if (class_weight.has_value()) {
    layout.weighted = true;
    layout.weight_bonafide = (*class_weight)[bonafide_label];
    layout.weight_spoof = (*class_weight)[1 - bonafide_label];
  }
  layout.weight_sum_divisor = total_weight_from_labels(label, class_weight, num_logits);
  return args;
}

}  // namespace

BinaryArgs prepare_binary_forward(
    const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label, int64_t reduction,
    c10::optional<c10::ArrayRef<double>> class_weight, int64_t num_logits) {
  check_binary_inputs(pred, label, bonafide_label, reduction, class_weight, num_logits);
  BinaryArgs args = prepare_binary(pred, label, bonafide_label, class_weight, num_logits);
  const auto options = pred.options().dtype(compute_dtype(pred.scalar_type()));
  args.loss = at::empty(reduced_shape(reduction, args.layout.numel), options);
  args.total_weight = at::empty({}, options);
  return args;
}

BinaryArgs prepare_binary_backward(
    const at::Tensor& grad_loss,
    const at::Tensor& pred,
    const at::Tensor& label,
    int64_t bonafide_label,
    int64_t reduction,
    c10::optional<c10::ArrayRef<double>> class_weight,
    int64_t num_logits,
    const c10::optional<at::Tensor>& total_weight) {
  check_binary_inputs(pred, label, bonafide_label, reduction, class_weight, num_logits);
  const int64_t labels = pred.numel() / num_logits;
  check_same_device(pred, "pred", grad_loss, "grad_loss");
  check_grad_loss(grad_loss, "grad_loss", reduction, labels);
  const auto dtype = compute_dtype(pred.scalar_type());
  const bool divides_by_total_weight = static_cast<Reduction>(reduction) == Reduction::kMean &&
      total_weight_from_labels(label, class_weight, num_logits);
  if (total_weight.has_value()) {
    check_same_device(pred, "pred", *total_weight, "total_weight");
    TORCH_CHECK_VALUE(
        is_supported_float(total_weight->scalar_type()) && total_weight->numel() == 1, "total_weight must be one "
        "float32, float64, float16 or bfloat16 value (the forward's total_weight), got dtype ",
        total_weight->scalar_type(), " and shape ", total_weight->sizes());
  } else {
    TORCH_CHECK_VALUE(
        !divides_by_total_weight, "total_weight (the forward's second output) is required: the mean of two logits "
        "with class weights and class-index labels divides by the total weight of the targets");
  }
  BinaryArgs args = prepare_binary(pred, label, bonafide_label, class_weight, num_logits);
  args.grad_loss = grad_loss.to(dtype).contiguous();
  if (divides_by_total_weight) args.total_weight_in = total_weight->to(dtype).reshape({});
  args.grad_pred = at::empty(pred.sizes(), pred.options());
  return args;
}

namespace {

// The label, lengths and centre indices of a layout (its sizes set already).
void describe_per_utterance(
    CosineLayout& layout, int64_t loss, const c10::optional<at::Tensor>& label,
    const c10::optional<at::Tensor>& lengths, const c10::optional<at::Tensor>& center_index) {
  if (label.has_value()) {
    layout.label = label->const_data_ptr();
    layout.label_dtype = label->scalar_type();
    layout.label_stride = label->stride(0);
    layout.label_classes = math::label_classes(kLossInfo[loss].classes, layout.num_centers);
  }
  if (lengths.has_value()) {
    layout.lengths = lengths->const_data_ptr();
    layout.lengths_dtype = lengths->scalar_type();
    layout.lengths_stride = lengths->stride(0);
  }
  if (center_index.has_value()) {
    layout.center_index = center_index->const_data_ptr();
    layout.center_index_dtype = center_index->scalar_type();
    layout.center_index_stride = center_index->stride(0);
  }
}

}  // namespace

CosineForwardArgs prepare_cosine_forward(
    const at::Tensor& emb,
    const at::Tensor& centers,
    const c10::optional<at::Tensor>& label,
    const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& center_index,
    int64_t loss,
    int64_t bonafide_label,
    int64_t score_rule,
    int64_t score_center,
    int64_t reduction) {
  check_cosine_inputs(
      emb, centers, label, lengths, center_index, loss, bonafide_label, score_rule, score_center, reduction);
  CosineForwardArgs args;
  args.emb = emb.stride(-1) == 1 ? emb : emb.contiguous();
  const auto dtype = compute_dtype(emb.scalar_type());
  args.centers = centers.to(dtype).contiguous();
  CosineLayout& layout = args.layout;
  layout.batch = emb.size(0);
  layout.dim = emb.size(-1);
  layout.num_centers = centers.size(0);
  layout.emb_stride_batch = args.emb.stride(0);
  layout.frames = emb.dim() == 3 ? emb.size(1) : 1;
  layout.emb_stride_time = emb.dim() == 3 ? args.emb.stride(1) : 0;
  describe_per_utterance(layout, loss, label, lengths, center_index);
  const auto options = emb.options().dtype(dtype);
  if (label.has_value()) args.per_utterance = at::empty({layout.batch}, options);
  args.score = at::empty({layout.batch}, options);
  args.pooled = at::empty({layout.batch, layout.dim}, options);
  return args;
}

CosineBackwardArgs prepare_cosine_backward(
    const c10::optional<at::Tensor>& grad_loss,
    const c10::optional<at::Tensor>& grad_score,
    const at::Tensor& pooled,
    const at::Tensor& centers,
    const c10::optional<at::Tensor>& label,
    const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& center_index,
    c10::SymIntArrayRef emb_sym_sizes,
    c10::ScalarType emb_dtype,
    int64_t loss,
    int64_t bonafide_label,
    int64_t score_rule,
    int64_t score_center,
    int64_t reduction) {
  const auto emb_sizes = C10_AS_INTARRAYREF_SLOW(emb_sym_sizes);
  // The sizes first: the kernels divide by D (chunk sizes), B (the mean) and T.
  TORCH_CHECK_VALUE(
      emb_sizes.size() == 2 || emb_sizes.size() == 3, "emb_sizes must describe a [B, T, D] or [B, D] emb, got ",
      emb_sizes);
  const int64_t batch = emb_sizes[0];
  const int64_t dim = emb_sizes.back();
  TORCH_CHECK_VALUE(
      batch > 0, "emb_sizes ", emb_sizes, " has an empty batch (B = ", batch, "); a loss needs at least one utterance");
  TORCH_CHECK_VALUE(dim > 0, "emb_sizes ", emb_sizes, " has D = ", dim, "; D must be positive");
  if (emb_sizes.size() == 3) {
    TORCH_CHECK_VALUE(emb_sizes[1] > 0, "emb_sizes ", emb_sizes, " has T = ", emb_sizes[1], " frames; T must be positive");
  }
  TORCH_CHECK_VALUE(
      is_supported_float(emb_dtype), "emb_dtype must be float32, float64, float16 or bfloat16, got ", emb_dtype);
  TORCH_CHECK_VALUE(
      pooled.dim() == 2 && pooled.size(0) == batch && pooled.size(1) == dim, "pooled must have shape [", batch, ", ",
      dim, "] (emb_sizes ", emb_sizes, "), got ", pooled.sizes());
  TORCH_CHECK_VALUE(
      pooled.scalar_type() == compute_dtype(emb_dtype), "pooled has dtype ", pooled.scalar_type(),
      " but an emb of dtype ", emb_dtype, " accumulates in ", compute_dtype(emb_dtype));
  check_same_device(pooled, "pooled", centers, "centers");
  check_centers(centers, dim);
  check_cosine_options(
      loss, label.has_value(), centers, center_index.has_value(), bonafide_label, score_rule, score_center, reduction);
  TORCH_CHECK_VALUE(
      grad_loss.has_value() || grad_score.has_value(), "one of grad_loss and grad_score must be given");
  if (grad_loss.has_value()) {
    TORCH_CHECK_VALUE(loss != kNoLoss, "grad_loss must be None without a loss (loss = ", kNoLoss, ")");
    check_same_device(pooled, "pooled", *grad_loss, "grad_loss");
    check_grad_loss(*grad_loss, "grad_loss", reduction, batch);
  }
  if (grad_score.has_value()) {
    check_same_device(pooled, "pooled", *grad_score, "grad_score");
    check_grad_loss(*grad_score, "grad_score", static_cast<int64_t>(Reduction::kNone), batch);
  }
  if (label.has_value()) check_label(*label, "pooled", pooled, batch);
  if (lengths.has_value()) check_lengths(*lengths, pooled, "pooled", batch);
  if (center_index.has_value()) check_center_index(*center_index, pooled, "pooled", batch);
  CosineBackwardArgs args;
  const auto dtype = pooled.scalar_type();
  if (grad_loss.has_value()) args.grad_loss = grad_loss->to(dtype).contiguous();
  if (grad_score.has_value()) args.grad_score = grad_score->to(dtype).contiguous();
  args.pooled = pooled.contiguous();
  args.centers = centers.to(dtype).contiguous();
  // The gradient is written contiguous: strides follow from the sizes.
  CosineLayout& layout = args.layout;
  layout.batch = emb_sizes[0];
  layout.dim = emb_sizes.back();
  layout.frames = emb_sizes.size() == 3 ? emb_sizes[1] : 1;
  layout.num_centers = centers.size(0);
  layout.emb_stride_time = layout.dim;
  layout.emb_stride_batch = layout.frames * layout.dim;
  describe_per_utterance(layout, loss, label, lengths, center_index);
  args.grad_emb = at::empty(emb_sizes, pooled.options().dtype(emb_dtype));
  args.grad_centers = at::empty(centers.sizes(), pooled.options());
  args.centers_dtype = centers.scalar_type();
  return args;
}

c10::ScalarType compute_dtype(c10::ScalarType input_dtype) {
  return input_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

std::vector<int64_t> reduced_shape(int64_t reduction, int64_t batch) {
  if (reduction == static_cast<int64_t>(Reduction::kNone)) return {batch};
  return {};
}

}  // namespace spoofloss
