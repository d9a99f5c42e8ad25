// Autograd for the spoofloss ops, in C++ under the Autograd dispatch key.
//
// Why C++: a Python autograd.Function (or torch.library.register_autograd)
// costs tens of microseconds of host time per forward+backward, which at
// training batch sizes is what a GPU step waits on. Both functions below call
// the registered backward ops, so the backward too has CPU and CUDA kernels,
// fakes and opchecks.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
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

// Whether an autograd graph has to be recorded: without it (inference, scoring,
// frozen inputs) the ops are called directly, skipping the Function's bookkeeping.
bool records_graph(const at::Tensor& a, const at::Tensor& b) {
  return at::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad());
}

OptionalTensor defined_or_none(const at::Tensor& t) {
  return t.defined() ? OptionalTensor(t) : c10::nullopt;
}

// One Function for the whole cosine-margin family: the losses and the score
// differ only in their epilogue, and so does their backward. The score is the
// kCosine epilogue with no label (that is how forward tells the two apart),
// reduction none, and the centre index in `target`. Only emb and the centres are differentiable; the score output of
// the loss and pooled are not.
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
        ctx->mark_non_differentiable({score});
        outputs = {loss, score, pooled};
      }
    }
    ctx->mark_non_differentiable({pooled});
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
    const auto saved = ctx->get_saved_variables();
    const auto& pooled = saved[0];
    const auto& centers = saved[1];
    variable_list grads(10);  // one per forward argument after ctx
    const at::Tensor& grad_loss = grad_outputs[0];
    if (!grad_loss.defined()) {
      return grads;
    }
    const auto emb_sizes = ctx->saved_data["emb_sizes"].toSymIntVector();
    const auto ints = ctx->saved_data["ints"].toIntVector();
    const auto margins = ctx->saved_data["margins"].toDoubleVector();
    auto [grad_emb, grad_centers] = cosine_margin_loss_backward_op(
        grad_loss, pooled, centers, defined_or_none(saved[2]), defined_or_none(saved[3]), emb_sizes,
        static_cast<c10::ScalarType>(ints[0]), /*epilogue=*/ints[1], margins[0], margins[1], margins[2],
        /*target=*/ints[2], /*reduction=*/ints[3]);
    grads[0] = grad_emb;
    grads[1] = grad_centers;
    return grads;
  }
};

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
    const auto saved = ctx->get_saved_variables();
    variable_list grads(4);
    if (grad_outputs[0].defined()) {
      grads[0] = binary_cross_entropy_backward_op(
          grad_outputs[0], saved[0], saved[1], ctx->saved_data["bonafide_label"].toInt(),
          ctx->saved_data["reduction"].toInt());
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
