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

#include "math.h"

namespace spoofloss {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = c10::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor, at::Tensor> cosine_margin_loss_op(
    const at::Tensor& emb, const at::Tensor& centers, const at::Tensor& label, const OptionalTensor& lengths,
    int64_t epilogue, double scale, double margin_bonafide, double margin_spoof, int64_t bonafide_label,
    int64_t reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spoofloss::cosine_margin_loss", "")
                       .typed<decltype(cosine_margin_loss_op)>();
  return op.call(emb, centers, label, lengths, epilogue, scale, margin_bonafide, margin_spoof, bonafide_label, reduction);
}

std::tuple<at::Tensor, at::Tensor> cosine_score_op(
    const at::Tensor& emb, const at::Tensor& centers, const OptionalTensor& lengths, int64_t center_index) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spoofloss::cosine_score", "")
                       .typed<decltype(cosine_score_op)>();
  return op.call(emb, centers, lengths, center_index);
}

std::tuple<at::Tensor, at::Tensor> cosine_margin_loss_backward_op(
    const at::Tensor& grad_loss, const at::Tensor& pooled, const at::Tensor& centers, const OptionalTensor& label,
    const OptionalTensor& lengths, c10::SymIntArrayRef emb_sizes, c10::ScalarType emb_dtype, int64_t epilogue,
    double scale, double margin_bonafide, double margin_spoof, int64_t bonafide_label, int64_t reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spoofloss::_cosine_margin_loss_backward", "")
                       .typed<decltype(cosine_margin_loss_backward_op)>();
  return op.call(
      grad_loss, pooled, centers, label, lengths, emb_sizes, emb_dtype, epilogue, scale, margin_bonafide, margin_spoof,
      bonafide_label, reduction);
}

at::Tensor binary_cross_entropy_op(const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label, int64_t reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spoofloss::binary_cross_entropy", "")
                       .typed<decltype(binary_cross_entropy_op)>();
  return op.call(pred, label, bonafide_label, reduction);
}

at::Tensor binary_cross_entropy_backward_op(
    const at::Tensor& grad_loss, const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label,
    int64_t reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spoofloss::_binary_cross_entropy_backward", "")
                       .typed<decltype(binary_cross_entropy_backward_op)>();
  return op.call(grad_loss, pred, label, bonafide_label, reduction);
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
    const at::Tensor& centers, const OptionalTensor& label, int64_t epilogue, double scale, double margin_bonafide,
    double margin_spoof, int64_t bonafide_label, int64_t reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spoofloss::_cosine_margin_loss_backward_composite", "")
                       .typed<decltype(cosine_margin_loss_backward_composite_op)>();
  check_composite_registered(op);
  return op.call(
      grad_loss, grad_score, pooled, centers, label, epilogue, scale, margin_bonafide, margin_spoof, bonafide_label,
      reduction);
}

std::tuple<at::Tensor, at::Tensor> binary_cross_entropy_backward_composite_op(
    const at::Tensor& grad_loss, const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label,
    int64_t reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spoofloss::_binary_cross_entropy_backward_composite", "")
                       .typed<decltype(binary_cross_entropy_backward_composite_op)>();
  check_composite_registered(op);
  return op.call(grad_loss, pred, label, bonafide_label, reduction);
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

// One Function for the whole cosine-margin family: the losses and the score
// differ only in their epilogue, and so does their backward. The score op is
// the kCosine epilogue with no label (that is how forward tells the two apart),
// reduction none, and the centre index in `target`. emb and the centres are
// differentiable, through the loss and through the score (the loss op's too);
// pooled is not.
class CosineMarginFunction : public torch::autograd::Function<CosineMarginFunction> {
 public:
  static variable_list forward(
      AutogradContext* ctx, const at::Tensor& emb, const at::Tensor& centers, const OptionalTensor& label,
      const OptionalTensor& lengths, int64_t epilogue, double scale, double margin_bonafide, double margin_spoof,
      int64_t target, int64_t reduction) {
    variable_list outputs;
    at::Tensor pooled;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      if (!label.has_value()) {  // the score op
        auto [score, pooled_] = cosine_score_op(emb, centers, lengths, target);
        pooled = pooled_;
        outputs = {score, pooled};
      } else {
        auto [loss, score, pooled_] = cosine_margin_loss_op(
            emb, centers, *label, lengths, epilogue, scale, margin_bonafide, margin_spoof, target, reduction);
        pooled = pooled_;
        outputs = {loss, score, pooled};
      }
    }
    ctx->mark_non_differentiable({pooled});
    // An output whose gradient nobody asked for (the loss op's score, most of
    // the time) reaches backward undefined rather than as zeros, and costs nothing.
    ctx->set_materialize_grads(false);
    // emb itself is not saved: the backward reads pooled, and a create_graph
    // backward reaches emb through this node's edge (PooledFromEmbBackward).
    ctx->save_for_backward({pooled, centers, label.value_or(at::Tensor()), lengths.value_or(at::Tensor())});
    // Three entries rather than one per argument: each is a string-keyed hash
    // map insert, paid on every training step.
    ctx->saved_data["emb_sizes"] = emb.sym_sizes();
    ctx->saved_data["ints"] = std::vector<int64_t>{
        static_cast<int64_t>(emb.scalar_type()), epilogue, target, reduction};
    ctx->saved_data["margins"] = std::vector<double>{scale, margin_bonafide, margin_spoof};
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list grads(10);  // one per forward argument after ctx
    const auto ints = ctx->saved_data["ints"].toIntVector();
    const auto epilogue = static_cast<Epilogue>(ints[1]);
    const bool score_op = epilogue == Epilogue::kCosine;
    // The loss op's outputs are (loss, score, pooled), the score op's (score, pooled).
    const at::Tensor& grad_loss = grad_outputs[0];
    const at::Tensor grad_score = score_op ? at::Tensor() : grad_outputs[1];
    if (!grad_loss.defined() && !grad_score.defined()) {
      return grads;
    }
    const auto saved = ctx->get_saved_variables();
    const auto& pooled = saved[0];
    const auto& centers = saved[1];
    const OptionalTensor label = defined_or_none(saved[2]);
    const OptionalTensor lengths = defined_or_none(saved[3]);
    const auto emb_sizes = ctx->saved_data["emb_sizes"].toSymIntVector();
    const auto emb_dtype = static_cast<c10::ScalarType>(ints[0]);
    const int64_t target = ints[2];
    const int64_t reduction = ints[3];
    const auto margins = ctx->saved_data["margins"].toDoubleVector();

    if (at::GradMode::is_enabled()) {  // create_graph=True
      auto [grad_emb, grad_centers] = differentiable_backward(
          grad_loss, grad_score, pooled, centers, label, saved[3], C10_AS_INTARRAYREF_SLOW(emb_sizes), emb_dtype,
          ints[1], margins, target, reduction);
      grads[0] = grad_emb;
      grads[1] = grad_centers;
      return grads;
    }

    at::Tensor grad_emb;
    at::Tensor grad_centers;
    if (grad_loss.defined()) {
      std::tie(grad_emb, grad_centers) = cosine_margin_loss_backward_op(
          grad_loss, pooled, centers, label, lengths, emb_sizes, emb_dtype, ints[1], margins[0], margins[1],
          margins[2], target, reduction);
    }
    if (grad_score.defined()) {
      // The loss op's score is the cosine to the score centre: the kCosine
      // epilogue's backward, added to the loss's (a second pass, paid only
      // when the score's gradient is used).
      auto [score_emb, score_centers] = cosine_margin_loss_backward_op(
          grad_score, pooled, centers, c10::nullopt, lengths, emb_sizes, emb_dtype,
          static_cast<int64_t>(Epilogue::kCosine), 1.0, 0.0, 0.0, math::score_center(epilogue, target, 0),
          static_cast<int64_t>(Reduction::kNone));
      if (grad_emb.defined()) {
        grad_emb.add_(score_emb);
        grad_centers.add_(score_centers);
      } else {
        grad_emb = score_emb;
        grad_centers = score_centers;
      }
    }
    grads[0] = grad_emb;
    grads[1] = grad_centers;
    return grads;
  }

 private:
  // The first-order gradients as a graph of torch ops, for a backward with
  // create_graph=True. The composite computes d / d pooled and d / d centres
  // from pooled [B, D] (spoofloss.reference's math, differentiated by autograd);
  // pooled enters it as a variable whose grad_fn leads to emb's edge of this
  // node (PooledFromEmbBackward), so a second backward reaches emb's producer.
  // Saving emb instead would keep it alive from the forward to the backward
  // even where nothing else holds it, on every first-order step too.
  static std::tuple<at::Tensor, at::Tensor> differentiable_backward(
      const at::Tensor& grad_loss, const at::Tensor& grad_score, const at::Tensor& pooled, const at::Tensor& centers,
      const OptionalTensor& label, const at::Tensor& lengths, c10::IntArrayRef emb_sizes, c10::ScalarType emb_dtype,
      int64_t epilogue, const std::vector<double>& margins, int64_t target, int64_t reduction) {
    const auto node = torch::autograd::get_current_node();
    const auto* self = dynamic_cast<const torch::autograd::CppNode<CosineMarginFunction>*>(node.get());
    TORCH_CHECK(
        self != nullptr, "spoofloss: a backward that records a graph (create_graph=True, double backward) through "
        "the cosine-margin ops must run in the autograd engine (torch.autograd.grad or .backward)");
    const torch::autograd::Edge& emb_edge = self->next_edge(0);
    at::Tensor pooled_input = pooled;  // a constant where emb needs no gradient
    if (emb_edge.is_valid()) {
      auto to_emb = c10::make_intrusive<PooledFromEmbBackward>(
          emb_edge, lengths, std::vector<int64_t>(emb_sizes.begin(), emb_sizes.end()), emb_dtype);
      const auto input_nr = to_emb->add_input_metadata(pooled);
      pooled_input = torch::autograd::make_variable(pooled, torch::autograd::Edge(std::move(to_emb), input_nr));
    }
    auto [grad_pooled, grad_centers] = cosine_margin_loss_backward_composite_op(
        defined_or_none(grad_loss), defined_or_none(grad_score), pooled_input, centers, label, epilogue, margins[0],
        margins[1], margins[2], target, reduction);
    return {spread_over_frames(grad_pooled, lengths, emb_sizes, emb_dtype), grad_centers};
  }
};

// d loss / d label of BCE with logits: the -t x term gives -x per element
// (times the upstream gradient, and / N for the mean), +x for bonafide_label 0,
// whose target is 1 - label. Used only when a soft label requires a gradient.
at::Tensor label_gradient(
    const at::Tensor& grad_loss, const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label,
    int64_t reduction) {
  const auto dtype = pred.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor weight = grad_loss.to(dtype);
  if (static_cast<Reduction>(reduction) == Reduction::kMean) {
    weight = weight / static_cast<double>(pred.numel());
  }
  // weight: [N] for reduction none, one element otherwise
  const int64_t weight_size = static_cast<Reduction>(reduction) == Reduction::kNone ? -1 : 1;
  at::Tensor grad = pred.reshape({-1}).to(dtype) * weight.reshape({weight_size});
  if (bonafide_label == 1) grad = grad.neg();
  return grad.reshape(label.sizes()).to(label.scalar_type());
}

class BinaryCrossEntropyFunction : public torch::autograd::Function<BinaryCrossEntropyFunction> {
 public:
  static variable_list forward(
      AutogradContext* ctx, const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label, int64_t reduction) {
    at::Tensor loss;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      loss = binary_cross_entropy_op(pred, label, bonafide_label, reduction);
    }
    ctx->save_for_backward({pred, label});
    ctx->saved_data["bonafide_label"] = bonafide_label;
    ctx->saved_data["reduction"] = reduction;
    return {loss};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list grads(4);
    const at::Tensor& grad_loss = grad_outputs[0];
    if (!grad_loss.defined()) {
      return grads;
    }
    const auto saved = ctx->get_saved_variables();
    const auto& pred = saved[0];
    const auto& label = saved[1];
    const int64_t bonafide_label = ctx->saved_data["bonafide_label"].toInt();
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    if (at::GradMode::is_enabled()) {
      // create_graph=True: the gradients as a graph of torch ops (pred is saved
      // anyway, so a second backward reaches it directly).
      auto [grad_pred, grad_label] =
          binary_cross_entropy_backward_composite_op(grad_loss, pred, label, bonafide_label, reduction);
      grads[0] = grad_pred;
      if (ctx->needs_input_grad(1)) grads[1] = grad_label;
      return grads;
    }
    if (ctx->needs_input_grad(0)) {
      grads[0] = binary_cross_entropy_backward_op(grad_loss, pred, label, bonafide_label, reduction);
    }
    if (ctx->needs_input_grad(1)) {
      grads[1] = label_gradient(grad_loss, pred, label, bonafide_label, reduction);
    }
    return grads;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> cosine_margin_loss_autograd(
    const at::Tensor& emb, const at::Tensor& centers, const at::Tensor& label, const OptionalTensor& lengths,
    int64_t epilogue, double scale, double margin_bonafide, double margin_spoof, int64_t bonafide_label,
    int64_t reduction) {
  if (!records_graph(emb, centers)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return cosine_margin_loss_op(
        emb, centers, label, lengths, epilogue, scale, margin_bonafide, margin_spoof, bonafide_label, reduction);
  }
  auto out = CosineMarginFunction::apply(
      emb, centers, OptionalTensor(label), lengths, epilogue, scale, margin_bonafide, margin_spoof, bonafide_label,
      reduction);
  return {out[0], out[1], out[2]};
}

std::tuple<at::Tensor, at::Tensor> cosine_score_autograd(
    const at::Tensor& emb, const at::Tensor& centers, const OptionalTensor& lengths, int64_t center_index) {
  if (!records_graph(emb, centers)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return cosine_score_op(emb, centers, lengths, center_index);
  }
  auto out = CosineMarginFunction::apply(
      emb, centers, OptionalTensor(), lengths, static_cast<int64_t>(Epilogue::kCosine), 1.0, 0.0, 0.0, center_index,
      static_cast<int64_t>(Reduction::kNone));
  return {out[0], out[1]};
}

at::Tensor binary_cross_entropy_autograd(
    const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label, int64_t reduction) {
  if (!records_graph(pred, label)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return binary_cross_entropy_op(pred, label, bonafide_label, reduction);
  }
  return BinaryCrossEntropyFunction::apply(pred, label, bonafide_label, reduction)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(spoofloss, Autograd, m) {
  m.impl("cosine_margin_loss", &cosine_margin_loss_autograd);
  m.impl("cosine_score", &cosine_score_autograd);
  m.impl("binary_cross_entropy", &binary_cross_entropy_autograd);
}

}  // namespace spoofloss
