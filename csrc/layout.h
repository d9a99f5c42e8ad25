// What the kernels know of their inputs: sizes, strides and raw pointers in a
// plain struct, so that the CUDA kernels (csrc/cuda/*.cu) compile without the
// ATen headers.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/macros/Macros.h>

#include <cstdint>

namespace spoofloss {

// Where one utterance's frames, label, length and centre index live. emb's
// feature stride is 1 (the kernels vectorise over D); batch and time strides
// are free, so a transposed [T, B, D] tensor or a slice along time is read
// without a copy. Labels, lengths and centre indices are read in their own
// dtype.
struct CosineLayout {
  int64_t batch = 0;
  int64_t frames = 0;  // T (1 for a [B, D] emb)
  int64_t dim = 0;     // D
  int64_t num_centers = 0;
  int64_t emb_stride_batch = 0;
  int64_t emb_stride_time = 0;
  const void* label = nullptr;  // null for the score op
  c10::ScalarType label_dtype = c10::ScalarType::Long;
  int64_t label_stride = 0;
  int64_t label_classes = 2;  // a label is a class index in [0, label_classes)
  const void* lengths = nullptr;  // null: every utterance has T frames
  c10::ScalarType lengths_dtype = c10::ScalarType::Long;
  int64_t lengths_stride = 0;
  const void* center_index = nullptr;  // null: no utterance names a centre
  c10::ScalarType center_index_dtype = c10::ScalarType::Long;
  int64_t center_index_stride = 0;
};

// The binary loss over N labels (one per utterance), in one of two layouts:
//  - one logit per label: pred is contiguous [N] (any shape, flattened), the
//    logit of bona fide against spoof;
//  - two logits per label: pred [N, 2], column c the logit of label value c
//    (as torch's CrossEntropyLoss), read through its strides, so a slice or a
//    transpose needs no copy.
// Labels are read in their own dtype.
struct BinaryLayout {
  int64_t numel = 0;  // N
  const void* label = nullptr;
  c10::ScalarType label_dtype = c10::ScalarType::Long;
  int64_t bonafide_label = 1;
  int64_t num_logits = 1;
  int64_t pred_stride_row = 1;    // two logits: elements from one utterance's row to the next
  int64_t pred_stride_class = 1;  // two logits: elements from column 0 to column 1
  // Class weights (the weight of the bona fide and of the spoof class): each
  // utterance's loss is w_b t softplus(-x) + w_s (1 - t) softplus(x) for the
  // bona fide target t and logit (difference) x. Without class weights both
  // are 1 and `weighted` is false.
  bool weighted = false;
  double weight_bonafide = 1.0;
  double weight_spoof = 1.0;
  // The mean divides by the total weight of the targets, sum_i w_{y_i}
  // (torch's CrossEntropyLoss(weight) with class indices: two logits, class
  // weights, an integer or bool label), rather than by N.
  bool weight_sum_divisor = false;

  // Column of the bona fide and of the spoof logit (two logits).
  C10_HOST_DEVICE int64_t bonafide_column_offset() const {
    return bonafide_label * pred_stride_class;
  }
  C10_HOST_DEVICE int64_t spoof_column_offset() const {
    return (1 - bonafide_label) * pred_stride_class;
  }
};

}  // namespace spoofloss
