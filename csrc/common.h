// Host-side pieces shared by the CPU and CUDA implementations: input
// validation (done once, at the top of each backend kernel, before any memory
// is touched) and the plain-old-data descriptions the kernels read.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/Optional.h>

#include <vector>

#include "layout.h"
#include "math.h"

namespace spoofloss {


// Shape, dtype and device checks for the cosine-margin ops. `target` is the
// bona fide label value for the losses and the centre index for the score.
void check_cosine_inputs(
    const at::Tensor& emb,
    const at::Tensor& centers,
    const c10::optional<at::Tensor>& label,
    const c10::optional<at::Tensor>& lengths,
    int64_t epilogue,
    int64_t target,
    int64_t reduction);

// Checks for the backward op: the saved tensors must still agree with emb_sizes.
void check_cosine_backward_inputs(
    const at::Tensor& grad_loss,
    const at::Tensor& pooled,
    const at::Tensor& centers,
    const c10::optional<at::Tensor>& label,
    const c10::optional<at::Tensor>& lengths,
    c10::IntArrayRef emb_sizes,
    c10::ScalarType emb_dtype,
    int64_t epilogue,
    int64_t target,
    int64_t reduction);

void check_binary_inputs(const at::Tensor& pred, const at::Tensor& label, int64_t bonafide_label, int64_t reduction);

// grad_loss of the binary backward: [N] for reduction none, a scalar otherwise.
void check_binary_grad_loss(const at::Tensor& grad_loss, const at::Tensor& pred, int64_t reduction);

// emb with a unit feature stride (a copy only when D is strided).
at::Tensor with_unit_feature_stride(const at::Tensor& emb);

// Fills the layout from validated inputs. emb must have a unit feature stride.
CosineLayout describe_cosine_inputs(
    const at::Tensor& emb,
    int64_t num_centers,
    const c10::optional<at::Tensor>& label,
    const c10::optional<at::Tensor>& lengths);

// Same, for the backward op: no emb, its sizes instead.
CosineLayout describe_cosine_backward(
    c10::IntArrayRef emb_sizes,
    int64_t num_centers,
    const c10::optional<at::Tensor>& label,
    const c10::optional<at::Tensor>& lengths);

// The dtype the kernels accumulate and return in: float64 for float64 input,
// float32 for float32, float16 and bfloat16.
c10::ScalarType compute_dtype(c10::ScalarType input_dtype);

// Shape of the reduced loss: [B] for "none", [] otherwise.
std::vector<int64_t> reduced_shape(int64_t reduction, int64_t batch);

template <typename acc_t>
MarginParams<acc_t> margin_params(double scale, double margin_bonafide, double margin_spoof, int64_t bonafide_label) {
  return MarginParams<acc_t>{
      static_cast<acc_t>(scale), static_cast<acc_t>(margin_bonafide), static_cast<acc_t>(margin_spoof), bonafide_label};
}

}  // namespace spoofloss
