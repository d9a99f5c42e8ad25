// What the kernels know of their inputs: sizes, strides and raw pointers in a
// plain struct, so that the CUDA kernels (csrc/cuda/*.cu) compile without the
// ATen headers.
#pragma once

#include <c10/core/ScalarType.h>

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

// The binary loss: pred is contiguous [N]; labels are read in their own dtype.
struct BinaryLayout {
  int64_t numel = 0;
  const void* label = nullptr;
  c10::ScalarType label_dtype = c10::ScalarType::Long;
  int64_t bonafide_label = 1;
};

}  // namespace spoofloss
