// Host-side preparation shared by the CPU and CUDA ops: each op validates its
// inputs once (shapes, dtypes, devices — before any memory is touched), brings
// them into the form the kernels read and allocates its outputs, here; the
// backends only launch their kernels on the result.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/Optional.h>

#include <vector>

#include "cosine_losses.h"
#include "layout.h"
#include "scalar_math.h"

namespace spoofloss {

// The forward ops' inputs once validated, in the form the kernels read, with
// the outputs allocated in the compute dtype. Shared by the CPU and CUDA ops.
struct CosineForwardArgs {
  at::Tensor emb;            // [B, T, D] or [B, D], unit feature stride (a copy only when D is strided)
  at::Tensor centers;        // [C, D], compute dtype, contiguous (a copy only when the dtype differs)
  CosineLayout layout;
  at::Tensor per_utterance;  // [B] loss of each utterance; undefined for the score op
  at::Tensor score;          // [B]
  at::Tensor pooled;         // [B, D]
};

// `label` is given for the losses and absent for the score op (loss kNoLoss).
// `loss`, `bonafide_label`, `score_rule`, `score_center` and `reduction` are
// the ops' integer arguments (csrc/ops.cpp), checked against the loss table.
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
    int64_t reduction);

// The backward op's inputs once validated, with its outputs allocated.
struct CosineBackwardArgs {
  at::Tensor grad_loss;     // [B] or [], compute dtype; undefined when the loss has no gradient
  at::Tensor grad_score;    // [B], compute dtype; undefined when the score has none
  at::Tensor pooled;        // [B, D], contiguous
  at::Tensor centers;       // [C, D], compute dtype, contiguous
  CosineLayout layout;      // of grad_emb (contiguous)
  at::Tensor grad_emb;      // emb's sizes and dtype
  at::Tensor grad_centers;  // [C, D], compute dtype; cast back with finish()
  c10::ScalarType centers_dtype;

  std::tuple<at::Tensor, at::Tensor> finish() const {
    return {grad_emb, grad_centers.to(centers_dtype)};
  }
};

CosineBackwardArgs prepare_cosine_backward(
    const c10::optional<at::Tensor>& grad_loss,
    const c10::optional<at::Tensor>& grad_score,
    const at::Tensor& pooled,
    const at::Tensor& centers,
    const c10::optional<at::Tensor>& label,
    const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& center_index,
    c10::SymIntArrayRef emb_sizes,
    c10::ScalarType emb_dtype,
    int64_t loss,
    int64_t bonafide_label,
    int64_t score_rule,
    int64_t score_center,
    int64_t reduction);

// What the kernels run per utterance, from the ops' arguments (validated by
// prepare_cosine_*).
template <typename acc_t>
CosineEpilogue<acc_t> cosine_epilogue(
    int64_t loss, double scale, double margin_bonafide, double margin_spoof, int64_t bonafide_label,
    int64_t score_rule, int64_t score_center) {
  return CosineEpilogue<acc_t>{
      loss,
      LossParams<acc_t>{
          static_cast<acc_t>(scale), static_cast<acc_t>(margin_bonafide), static_cast<acc_t>(margin_spoof),
          bonafide_label},
      static_cast<ScoreRule>(score_rule), score_center};
}

// The binary ops' inputs once validated, with their outputs allocated.
struct BinaryArgs {
  at::Tensor pred;          // one logit: contiguous; two logits: [N, 2] as given (the layout holds its strides)
  at::Tensor label;         // contiguous
  BinaryLayout layout;
  at::Tensor loss;          // forward: [N] (reduction none) or [], compute dtype
  at::Tensor total_weight;  // forward: [], compute dtype (see binary_cross_entropy in ops.cpp)
  at::Tensor grad_loss;     // backward: [N] or [], compute dtype
  at::Tensor total_weight_in;  // backward: [], compute dtype; undefined unless the mean divides by it
  at::Tensor grad_pred;     // backward: pred's sizes and dtype, contiguous
};

// class_weight: the weights of label 0 and label 1 (torch's `weight`
// argument of CrossEntropyLoss), or none; num_logits: 1 or 2.
BinaryArgs prepare_binary_forward(
    const at::Tensor& pred,
    const at::Tensor& label,
    int64_t bonafide_label,
    int64_t reduction,
    c10::optional<c10::ArrayRef<double>> class_weight,
    int64_t num_logits);

BinaryArgs prepare_binary_backward(
    const at::Tensor& grad_loss,
    const at::Tensor& pred,
    const at::Tensor& label,
    int64_t bonafide_label,
    int64_t reduction,
    c10::optional<c10::ArrayRef<double>> class_weight,
    int64_t num_logits,
    const c10::optional<at::Tensor>& total_weight);

// The dtype the kernels accumulate and return in: float64 for float64 input,
// float32 for float32, float16 and bfloat16.
c10::ScalarType compute_dtype(c10::ScalarType input_dtype);

// Shape of the reduced loss: [B] for "none", [] otherwise.
std::vector<int64_t> reduced_shape(int64_t reduction, int64_t batch);

}  // namespace spoofloss
