// The whole operator surface of spoofloss, in one place.
//
// Backends register kernels in csrc/cpu and csrc/cuda (TORCH_LIBRARY_IMPL with
// the CPU and CUDA keys), autograd lives in csrc/autograd.cpp (Autograd key),
// and the fake (meta) kernels torch.compile needs are registered from
// python/spoofloss/ops.py.
#include <torch/library.h>

TORCH_LIBRARY(spoofloss, m) {
  // Cosine-margin losses: masked time-mean of emb [B, T, D] (or [B, D]) over
  // the first lengths[b] frames, cosine with each of the C centres [C, D],
  // then the loss's epilogue and the reduction (0 = none -> [B], 1 = mean,
  // 2 = sum -> []). `loss` is a row of the loss table (csrc/cosine_losses.h;
  // spoofloss.ops reads the codes from the library); label [B] or [B, 1]
  // holds class indices, bonafide_label is the bona fide class. center_index
  // [B] optionally ties each utterance to a centre (-1: none).
  // Returns the loss, the score [B] (score_rule: 0 cosine to score_center,
  // 1 the nearest centre, 2 the log-posterior of score_center's class at
  // scale, 3 cosine to the utterance's centre_index) and pooled, the
  // time-mean [B, D] in the accumulation dtype that the backward reads
  // instead of emb.
  m.def(
      "cosine_margin_loss(Tensor emb, Tensor centers, Tensor label, Tensor? lengths, Tensor? center_index, "
      "int loss, float scale, float margin_bonafide, float margin_spoof, int bonafide_label, int score_rule, "
      "int score_center, int reduction) -> (Tensor loss, Tensor score, Tensor pooled)");

  // The countermeasure score alone, [B], as the loss op's score output (scale
  // serves score_rule 2).
  m.def(
      "cosine_score(Tensor emb, Tensor centers, Tensor? lengths, Tensor? center_index, int score_rule, "
      "int score_center, float scale) -> (Tensor score, Tensor pooled)");

  // Gradients of both ops above with respect to emb (written once, zero on
  // padded frames, shape emb_sizes, dtype emb_dtype) and to the centres (a
  // deterministic reduction over the batch), of grad_loss . loss +
  // grad_score . score in one pass: either may be None. For the score op,
  // loss is -1 and label None.
  m.def(
      "_cosine_margin_loss_backward(Tensor? grad_loss, Tensor? grad_score, Tensor pooled, Tensor centers, "
      "Tensor? label, Tensor? lengths, Tensor? center_index, SymInt[] emb_sizes, ScalarType emb_dtype, int loss, "
      "float scale, float margin_bonafide, float margin_spoof, int bonafide_label, int score_rule, "
      "int score_center, int reduction) -> (Tensor grad_emb, Tensor grad_centers)");

  // Binary cross-entropy with logits over the flattened pred (one logit per label).
  m.def("binary_cross_entropy(Tensor pred, Tensor label, int bonafide_label, int reduction) -> Tensor");
  m.def(
      "_binary_cross_entropy_backward(Tensor grad_loss, Tensor pred, Tensor label, int bonafide_label, "
      "int reduction) -> Tensor");

  // The two backward ops above as differentiable composites of torch ops (the
  // kernels are Python functions built on spoofloss.reference, registered by
  // python/spoofloss/ops.py as CompositeImplicitAutograd). csrc/autograd.cpp
  // calls them instead of the fused backward ops only in a backward that records
  // a graph (create_graph=True: double backward, gradient penalties). The cosine
  // one works on pooled [B, D] and returns d / d pooled and d / d centers of
  // grad_loss . loss + grad_score . score (either may be None). The binary one
  // returns d / d pred and d / d label (empty unless label requires grad).
  m.def(
      "_cosine_margin_loss_backward_composite(Tensor? grad_loss, Tensor? grad_score, Tensor pooled, "
      "Tensor centers, Tensor? label, Tensor? center_index, int loss, float scale, float margin_bonafide, "
      "float margin_spoof, int bonafide_label, int score_rule, int score_center, int reduction) "
      "-> (Tensor grad_pooled, Tensor grad_centers)");
  m.def(
      "_binary_cross_entropy_backward_composite(Tensor grad_loss, Tensor pred, Tensor label, int bonafide_label, "
      "int reduction) -> (Tensor grad_pred, Tensor grad_label)");
}
