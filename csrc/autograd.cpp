// Autograd for the spoofloss ops, in C++ under the Autograd dispatch key.
//
// Why C++: a Python autograd.Function (or torch.library.register_autograd)
// costs tens of microseconds of host time per forward+backward, which at
// training batch sizes is what a GPU step waits on. Both functions below call
// the registered backward ops, so the backward too has CPU and CUDA kernels,
// fakes and opchecks.
//
// A backward that records a graph of its own (create_graph=True: double
// backward, gradient penalties) takes another road, costing nothing on the
// first-order one: the first-order gradients are then built from plain torch
// ops (the *_backward_composite ops, written in Python from
// spoofloss.reference), so autograd can differentiate them again.
#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <memory>
#include <type_traits>
#include <utility>

#include "cosine_losses.h"
#include "scalar_math.h"

namespace spoofloss {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = c10::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor, at::Tensor> cosine_margin_loss_op(
    const at::Tensor& emb, const at::Tensor& centers, const at::Tensor& label, const OptionalTensor& lengths,
    const OptionalTensor& center_index, int64_t loss, double scale, double margin_bonafide, double margin_spoof,
    int64_t bonafide_label, int64_t score_rule, int64_t score_center, int64_t reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spoofloss::cosine_margin_loss", "")
                       .typed<decltype(cosine_margin_loss_op)>();
  return op.call(
      emb, centers, label, lengths, center_index, loss, scale, margin_bonafide, margin_spoof, bonafide_label,
      score_rule, score_center, reduction);
}

std::tuple<at::Tensor, at::Tensor> cosine_score_op(
    const at::Tensor& emb, const at::Tensor& centers, const OptionalTensor& lengths, const OptionalTensor& center_index,
    int64_t score_rule, int64_t score_center, double scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spoofloss::cosine_score", "")
                       .typed<decltype(cosine_score_op)>();
  return op.call(emb, centers, lengths, center_index, score_rule, score_center, scale);
}

std::tuple<at::Tensor, at::Tensor> cosine_margin_loss_backward_op(
    const OptionalTensor& grad_loss, const OptionalTensor& grad_score, const at::Tensor& pooled,
    const at::Tensor& centers, const OptionalTensor& label, const OptionalTensor& lengths,
    const OptionalTensor& center_index, c10::SymIntArrayRef emb_sizes, c10::ScalarType emb_dtype, int64_t loss,
    double scale, double margin_bonafide, double margin_spoof, int64_t bonafide_label, int64_t score_rule,
    int64_t score_center, int64_t reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spoofloss::_cosine_margin_loss_backward", "")
                       .typed<decltype(cosine_margin_loss_backward_op)>();
  return op.call(
      grad_loss, grad_score, pooled, centers, label, lengths, center_index, emb_sizes, emb_dtype, loss, scale,
      margin_bonafide, margin_spoof, bonafide_label, score_rule, score_center, reduction);
}

using OptionalWeights = c10::optional<c10::ArrayRef<double>>;

std::tuple<at::Tensor, at::Tensor> binary_cross_entropy_op(
    const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label, int64_t reduction,
    OptionalWeights class_weight, int64_t num_logits) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spoofloss::binary_cross_entropy", "")
                       .typed<decltype(binary_cross_entropy_op)>();
  return op.call(pred, label, bonafide_label, reduction, class_weight, num_logits);
}

at::Tensor binary_cross_entropy_backward_op(
    const at::Tensor& grad_loss, const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label,
    int64_t reduction, OptionalWeights class_weight, int64_t num_logits, const OptionalTensor& total_weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spoofloss::_binary_cross_entropy_backward", "")
                       .typed<decltype(binary_cross_entropy_backward_op)>();
  return op.call(grad_loss, pred, label, bonafide_label, reduction, class_weight, num_logits, total_weight);
}

// The composites' kernels are Python functions that `import spoofloss` registers;
// a library loaded without the package (torch.ops.load_library) has none.
void check_composite_registered(const c10::OperatorHandle& op) {
  TORCH_CHECK(
      op.hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd), "spoofloss: a backward that records a ",
      "graph (create_graph=True, double backward) needs ", op.schema().name(), ", which `import spoofloss` registers; ",
      "import the spoofloss package rather than loading its library alone");
}

// The differentiable forms of the two backward ops (ops.cpp; kernels in
// python/spoofloss/ops.py, CompositeImplicitAutograd).
std::tuple<at::Tensor, at::Tensor> cosine_margin_loss_backward_composite_op(
    const OptionalTensor& grad_loss, const OptionalTensor& grad_score, const at::Tensor& pooled,
    const at::Tensor& centers, const OptionalTensor& label, const OptionalTensor& center_index, int64_t loss,
    double scale, double margin_bonafide, double margin_spoof, int64_t bonafide_label, int64_t score_rule,
    int64_t score_center, int64_t reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spoofloss::_cosine_margin_loss_backward_composite", "")
                       .typed<decltype(cosine_margin_loss_backward_composite_op)>();
  check_composite_registered(op);
  return op.call(
      grad_loss, grad_score, pooled, centers, label, center_index, loss, scale, margin_bonafide, margin_spoof,
      bonafide_label, score_rule, score_center, reduction);
}

std::tuple<at::Tensor, at::Tensor> binary_cross_entropy_backward_composite_op(
    const at::Tensor& grad_loss, const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label,
    int64_t reduction, OptionalWeights class_weight, int64_t num_logits) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spoofloss::_binary_cross_entropy_backward_composite", "")
                       .typed<decltype(binary_cross_entropy_backward_composite_op)>();
  check_composite_registered(op);
  return op.call(grad_loss, pred, label, bonafide_label, reduction, class_weight, num_logits);
}

// Whether an autograd graph has to be recorded: without it (inference, scoring,
// frozen inputs) the ops are called directly, skipping the Function's bookkeeping.
bool records_graph(const at::Tensor& a, const at::Tensor& b) {
  return at::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad());
}

OptionalTensor defined_or_none(const at::Tensor& t) {
  return t.defined() ? OptionalTensor(t) : c10::nullopt;
}

// d loss / d emb from d loss / d pooled [B, D]: pooled is the mean over each
// utterance's valid frames, so every valid frame receives grad_pooled / L_b and
// padded frames zero. Plain (differentiable) torch ops, used where a graph is
// recorded. lengths: [B] or undefined (all T frames).
at::Tensor spread_over_frames(
    const at::Tensor& grad_pooled, const at::Tensor& lengths, c10::IntArrayRef emb_sizes, c10::ScalarType emb_dtype) {
  if (emb_sizes.size() == 2) return grad_pooled.to(emb_dtype);
  const int64_t frames = emb_sizes[1];
  if (!lengths.defined()) {
    return (grad_pooled / static_cast<double>(frames)).unsqueeze(1).expand(emb_sizes).to(emb_dtype);
  }
  const at::Tensor row = (grad_pooled / lengths.to(grad_pooled.scalar_type()).unsqueeze(1)).unsqueeze(1);  // [B, 1, D]
  const at::Tensor valid = at::arange(frames, lengths.options().dtype(at::kLong)).unsqueeze(0) < lengths.unsqueeze(1);
  return at::where(valid.unsqueeze(-1), row, at::zeros({}, row.options())).to(emb_dtype);  // [B, T, D]
}

// The backward of "pooled as a function of emb" (the masked time-mean), for the
// graph that a create_graph backward records: its one next edge is emb's. It
// lets the differentiable first-order gradient be computed from the saved
// pooled [B, D] and still reach emb (and whatever produced emb) in a second
// backward, without saving emb itself.
struct PooledFromEmbBackward : public torch::autograd::Node {
  PooledFromEmbBackward(
      torch::autograd::Edge emb_edge, at::Tensor lengths, std::vector<int64_t> emb_sizes, c10::ScalarType emb_dtype)
      : Node(torch::autograd::edge_list{std::move(emb_edge)}),
        lengths_(std::move(lengths)),
        emb_sizes_(std::move(emb_sizes)),
        emb_dtype_(emb_dtype) {}

  variable_list apply(variable_list&& grads) override {
    if (!grads[0].defined()) return {at::Tensor()};
    return {spread_over_frames(grads[0], lengths_, emb_sizes_, emb_dtype_)};
  }

  std::string name() const override {
    return "spoofloss::PooledFromEmbBackward";
  }

 private:
  at::Tensor lengths_;  // [B] or undefined
  std::vector<int64_t> emb_sizes_;
  c10::ScalarType emb_dtype_;
};

// A new autograd node, held the way this torch's Edge holds one: std::shared_ptr
// up to torch 2.12, c10::intrusive_ptr since 2.13 (the Node type changed base).
using NodePointer = decltype(torch::autograd::Edge::function);

template <typename NodeType, typename... Args>
NodePointer make_node(Args&&... args) {
  if constexpr (std::is_same_v<NodePointer, std::shared_ptr<torch::autograd::Node>>) {
    return std::make_shared<NodeType>(std::forward<Args>(args)...);
  } else {
    return c10::make_intrusive<NodeType>(std::forward<Args>(args)...);
  }
}

// One Function for the whole cosine-margin family: the losses differ only in
// their epilogue, and so does their backward; the score op is the family with
// no loss (kNoLoss) and no label. The loss's score output is differentiable
// too, through the same backward op: one fused pass for both upstream
// gradients. pooled is not differentiable.
class CosineMarginFunction : public torch::autograd::Function<CosineMarginFunction> {
 public:
  // The op's integer and float arguments, in the order the backward op takes them.
  struct Options {
    int64_t loss;
    double scale, margin_bonafide, margin_spoof;
    int64_t bonafide_label, score_rule, score_center, reduction;
  };

  static variable_list forward(
      AutogradContext* ctx, const at::Tensor& emb, const at::Tensor& centers, const OptionalTensor& label,
      const OptionalTensor& lengths, const OptionalTensor& center_index, int64_t loss, double scale,
      double margin_bonafide, double margin_spoof, int64_t bonafide_label, int64_t score_rule, int64_t score_center,
      int64_t reduction) {
    variable_list outputs;
    at::Tensor pooled;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      if (loss == kNoLoss) {  // the score op
        auto [score, pooled_] = cosine_score_op(emb, centers, lengths, center_index, score_rule, score_center, scale);
        pooled = pooled_;
        outputs = {score, pooled};
      } else {
        auto [loss_value, score, pooled_] = cosine_margin_loss_op(
            emb, centers, *label, lengths, center_index, loss, scale, margin_bonafide, margin_spoof, bonafide_label,
            score_rule, score_center, reduction);
        pooled = pooled_;
        outputs = {loss_value, score, pooled};
      }
    }
    ctx->mark_non_differentiable({pooled});
    // An output whose gradient is not used arrives undefined: a loss whose
    // score is never backpropagated costs nothing for it.
    ctx->set_materialize_grads(false);
    ctx->save_for_backward(
        {pooled, centers, label.value_or(at::Tensor()), lengths.value_or(at::Tensor()),
         center_index.value_or(at::Tensor())});
    // Three entries rather than one per argument: each is a string-keyed hash
    // map insert, paid on every training step.
    ctx->saved_data["emb_sizes"] = emb.sym_sizes();
    ctx->saved_data["ints"] = std::vector<int64_t>{
        static_cast<int64_t>(emb.scalar_type()), loss, bonafide_label, score_rule, score_center, reduction};
    ctx->saved_data["floats"] = std::vector<double>{scale, margin_bonafide, margin_spoof};
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list grads(13);  // one per forward argument after ctx
    const auto ints = ctx->saved_data["ints"].toIntVector();
    const auto floats = ctx->saved_data["floats"].toDoubleVector();
    const Options options{ints[1], floats[0], floats[1], floats[2], ints[2], ints[3], ints[4], ints[5]};
    const bool score_op = options.loss == kNoLoss;
    // outputs: (score, pooled) for the score op, (loss, score, pooled) for the loss
    const at::Tensor grad_loss = score_op ? at::Tensor() : grad_outputs[0];
    const at::Tensor& grad_score = score_op ? grad_outputs[0] : grad_outputs[1];
    if (!grad_loss.defined() && !grad_score.defined()) {
      return grads;
    }
    const auto saved = ctx->get_saved_variables();
    const auto& pooled = saved[0];
    const auto& centers = saved[1];
    const auto emb_sizes = ctx->saved_data["emb_sizes"].toSymIntVector();
    const auto emb_dtype = static_cast<c10::ScalarType>(ints[0]);

    if (at::GradMode::is_enabled()) {  // create_graph=True
      auto [grad_emb, grad_centers] = differentiable_backward(
          grad_loss, grad_score, pooled, centers, saved[2], saved[3], saved[4], C10_AS_INTARRAYREF_SLOW(emb_sizes),
          emb_dtype, options);
      grads[0] = grad_emb;
      grads[1] = grad_centers;
      return grads;
    }
    auto [grad_emb, grad_centers] = cosine_margin_loss_backward_op(
        defined_or_none(grad_loss), defined_or_none(grad_score), pooled, centers, defined_or_none(saved[2]),
        defined_or_none(saved[3]), defined_or_none(saved[4]), emb_sizes, emb_dtype, options.loss, options.scale,
        options.margin_bonafide, options.margin_spoof, options.bonafide_label, options.score_rule,
        options.score_center, options.reduction);
    grads[0] = grad_emb;
    grads[1] = grad_centers;
    return grads;
  }

 private:
  // The first-order gradients as a graph autograd can differentiate again.
  // emb is not saved (that would keep it alive from the forward to the
  // backward): pooled is tied to emb's edge by a node that spreads a pooled
  // gradient over the valid frames, and the composite op differentiates the
  // reference loss on pooled [B, D].
  static std::tuple<at::Tensor, at::Tensor> differentiable_backward(
      const at::Tensor& grad_loss, const at::Tensor& grad_score, const at::Tensor& pooled, const at::Tensor& centers,
      const at::Tensor& label, const at::Tensor& lengths, const at::Tensor& center_index, c10::IntArrayRef emb_sizes,
      c10::ScalarType emb_dtype, const Options& options) {
    const auto node = torch::autograd::get_current_node();
    const auto* self = dynamic_cast<const torch::autograd::CppNode<CosineMarginFunction>*>(node.get());
    TORCH_CHECK(
        self != nullptr, "spoofloss: a backward that records a graph (create_graph=True, double backward) through "
        "the cosine-margin ops must run in the autograd engine (torch.autograd.grad or .backward)");
    const torch::autograd::Edge& emb_edge = self->next_edge(0);
    at::Tensor pooled_input = pooled;  // a constant where emb needs no gradient
    if (emb_edge.is_valid()) {
      auto to_emb = make_node<PooledFromEmbBackward>(
          emb_edge, lengths, std::vector<int64_t>(emb_sizes.begin(), emb_sizes.end()), emb_dtype);
      const auto input_nr = to_emb->add_input_metadata(pooled);
      pooled_input = torch::autograd::make_variable(pooled, torch::autograd::Edge(std::move(to_emb), input_nr));
    }
    auto [grad_pooled, grad_centers] = cosine_margin_loss_backward_composite_op(
        defined_or_none(grad_loss), defined_or_none(grad_score), pooled_input, centers, defined_or_none(label),
        defined_or_none(center_index), options.loss, options.scale, options.margin_bonafide, options.margin_spoof,
        options.bonafide_label, options.score_rule, options.score_center, options.reduction);
    return {spread_over_frames(grad_pooled, lengths, emb_sizes, emb_dtype), grad_centers};
  }
};

// d loss / d label, for a soft label that requires grad (plain torch ops: off
// the hot path). With x the logit (for two logits, bona fide minus spoof) and
// t the bona fide target, loss = w_b t softplus(-x) + w_s (1 - t) softplus(x),
// so d loss / d t = w_b softplus(-x) - w_s softplus(x), which is -x without
// class weights; t is the label (bonafide_label 1) or 1 - label. A floating
// label is a probability, so a mean divides by N (torch's soft targets).
at::Tensor label_gradient(
    const at::Tensor& grad_loss, const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label,
    int64_t reduction, const std::vector<double>& class_weight, int64_t num_logits) {
  const auto dtype = pred.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor logit;  // [N]
  if (num_logits == 2) {
    logit = pred.select(1, bonafide_label).to(dtype) - pred.select(1, 1 - bonafide_label).to(dtype);
  } else {
    logit = pred.reshape({-1}).to(dtype);
  }
  const int64_t labels = logit.size(0);
  at::Tensor weight = grad_loss.to(dtype);
  if (static_cast<Reduction>(reduction) == Reduction::kMean) {
    weight = weight / static_cast<double>(labels);
  }
  // weight: [N] for reduction none, one element otherwise
  const int64_t weight_size = static_cast<Reduction>(reduction) == Reduction::kNone ? -1 : 1;
  at::Tensor d_target;
  if (class_weight.empty()) {
    d_target = logit.neg();
  } else {
    // w_b relu(-x) - w_s relu(x) + (w_b - w_s) log(1 + exp(-|x|)): no overflow, and -x exactly for equal weights
    const double w_b = class_weight[bonafide_label];
    const double w_s = class_weight[1 - bonafide_label];
    d_target = logit.neg().clamp_min(0) * w_b - logit.clamp_min(0) * w_s;
    if (w_b != w_s) d_target = d_target + logit.abs().neg().exp().log1p() * (w_b - w_s);
  }
  at::Tensor grad = d_target * weight.reshape({weight_size});
  if (bonafide_label == 0) grad = grad.neg();
  return grad.reshape(label.sizes()).to(label.scalar_type());
}

class BinaryCrossEntropyFunction : public torch::autograd::Function<BinaryCrossEntropyFunction> {
 public:
  static variable_list forward(
      AutogradContext* ctx, const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label,
      int64_t reduction, OptionalWeights class_weight, int64_t num_logits) {
    at::Tensor loss, total_weight;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(loss, total_weight) =
          binary_cross_entropy_op(pred, label, bonafide_label, reduction, class_weight, num_logits);
    }
    ctx->mark_non_differentiable({total_weight});
    // total_weight's gradient is never used: left undefined rather than zeros
    ctx->set_materialize_grads(false);
    // the backward reads total_weight only where a mean divides by it
    const bool needs_total_weight = static_cast<Reduction>(reduction) == Reduction::kMean && class_weight.has_value() &&
        num_logits == 2 && at::isIntegralType(label.scalar_type(), /*includeBool=*/true);
    ctx->save_for_backward({pred, label, needs_total_weight ? total_weight : at::Tensor()});
    ctx->saved_data["ints"] = std::vector<int64_t>{bonafide_label, reduction, num_logits};
    if (class_weight.has_value()) ctx->saved_data["class_weight"] = class_weight->vec();
    return {loss, total_weight};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list grads(6);  // one per forward argument after ctx
    const at::Tensor& grad_loss = grad_outputs[0];
    if (!grad_loss.defined()) {
      return grads;
    }
    const auto saved = ctx->get_saved_variables();
    const auto& pred = saved[0];
    const auto& label = saved[1];
    const auto ints = ctx->saved_data["ints"].toIntVector();
    const int64_t bonafide_label = ints[0], reduction = ints[1], num_logits = ints[2];
    const auto weights_entry = ctx->saved_data.find("class_weight");
    const std::vector<double> class_weight =
        weights_entry == ctx->saved_data.end() ? std::vector<double>() : weights_entry->second.toDoubleVector();
    const OptionalWeights weights = class_weight.empty() ? OptionalWeights() : OptionalWeights(class_weight);
    if (at::GradMode::is_enabled()) {
      // create_graph=True: the gradients as a graph of torch ops (pred is saved
      // anyway, so a second backward reaches it directly).
      auto [grad_pred, grad_label] = binary_cross_entropy_backward_composite_op(
          grad_loss, pred, label, bonafide_label, reduction, weights, num_logits);
      grads[0] = grad_pred;
      if (ctx->needs_input_grad(1)) grads[1] = grad_label;
      return grads;
    }
    if (ctx->needs_input_grad(0)) {
      grads[0] = binary_cross_entropy_backward_op(
          grad_loss, pred, label, bonafide_label, reduction, weights, num_logits, defined_or_none(saved[2]));
    }
    if (ctx->needs_input_grad(1)) {
      grads[1] = label_gradient(grad_loss, pred, label, bonafide_label, reduction, class_weight, num_logits);
    }
    return grads;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> cosine_margin_loss_autograd(
    const at::Tensor& emb, const at::Tensor& centers, const at::Tensor& label, const OptionalTensor& lengths,
    const OptionalTensor& center_index, int64_t loss, double scale, double margin_bonafide, double margin_spoof,
    int64_t bonafide_label, int64_t score_rule, int64_t score_center, int64_t reduction) {
  if (!records_graph(emb, centers)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return cosine_margin_loss_op(
        emb, centers, label, lengths, center_index, loss, scale, margin_bonafide, margin_spoof, bonafide_label,
        score_rule, score_center, reduction);
  }
  auto out = CosineMarginFunction::apply(
      emb, centers, OptionalTensor(label), lengths, center_index, loss, scale, margin_bonafide, margin_spoof,
      bonafide_label, score_rule, score_center, reduction);
  return {out[0], out[1], out[2]};
}

std::tuple<at::Tensor, at::Tensor> cosine_score_autograd(
    const at::Tensor& emb, const at::Tensor& centers, const OptionalTensor& lengths, const OptionalTensor& center_index,
    int64_t score_rule, int64_t score_center, double scale) {
  if (!records_graph(emb, centers)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return cosine_score_op(emb, centers, lengths, center_index, score_rule, score_center, scale);
  }
  auto out = CosineMarginFunction::apply(
      emb, centers, OptionalTensor(), lengths, center_index, kNoLoss, scale, 0.0, 0.0, /*bonafide_label=*/0,
      score_rule, score_center, static_cast<int64_t>(Reduction::kNone));
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> binary_cross_entropy_autograd(
    const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label, int64_t reduction,
    OptionalWeights class_weight, int64_t num_logits) {
  if (!records_graph(pred, label)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return binary_cross_entropy_op(pred, label, bonafide_label, reduction, class_weight, num_logits);
  }
  auto out = BinaryCrossEntropyFunction::apply(pred, label, bonafide_label, reduction, class_weight, num_logits);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(spoofloss, Autograd, m) {
  m.impl("cosine_margin_loss", &cosine_margin_loss_autograd);
  m.impl("cosine_score", &cosine_score_autograd);
  m.impl("binary_cross_entropy", &binary_cross_entropy_autograd);
}

}  // namespace spoofloss
