// Host side of the CUDA cosine-margin ops: validation, allocation, dtype
// dispatch and registration. The kernels are in cosine_margin_kernel.cu.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common.h"
#include "launch.h"

namespace spoofloss {
namespace {

int64_t time_chunks_here(const CosineLayout& layout) {
  return cuda::time_chunks(
      layout.batch, layout.frames, layout.dim, at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
}

// Forward of the loss and the score; loss_per_utterance is undefined for the score.
void cosine_forward(
    const at::Tensor& emb, const at::Tensor& centers, const CosineLayout& layout, Epilogue epilogue, double scale,
    double margin_bonafide, double margin_spoof, int64_t bonafide_label, int64_t score_target, int64_t score_center,
    const at::Tensor& loss_per_utterance, const at::Tensor& score, const at::Tensor& pooled) {
  const int64_t chunks = time_chunks_here(layout);
  at::Tensor partial = at::empty({layout.batch, chunks, layout.dim}, pooled.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, emb.scalar_type(), "cosine_forward_cuda", [&] {
    using acc_t = cuda::acc_of<scalar_t>;
    cuda::launch_cosine_forward<scalar_t>(
        emb.const_data_ptr<scalar_t>(), centers.const_data_ptr<acc_t>(), layout, epilogue,
        margin_params<acc_t>(scale, margin_bonafide, margin_spoof, bonafide_label), score_target, score_center,
        chunks, partial.mutable_data_ptr<acc_t>(),
        loss_per_utterance.defined() ? loss_per_utterance.mutable_data_ptr<acc_t>() : nullptr,
        score.mutable_data_ptr<acc_t>(), pooled.mutable_data_ptr<acc_t>(), at::cuda::getCurrentCUDAStream());
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cosine_margin_loss_cuda(
    const at::Tensor& emb_in, const at::Tensor& centers_in, const at::Tensor& label,
    const c10::optional<at::Tensor>& lengths, int64_t epilogue, double scale, double margin_bonafide,
    double margin_spoof, int64_t bonafide_label, int64_t reduction) {
  check_cosine_inputs(emb_in, centers_in, label, lengths, epilogue, bonafide_label, reduction);
  const c10::cuda::CUDAGuard device_guard(emb_in.device());
  const at::Tensor emb = with_unit_feature_stride(emb_in);
  const auto acc_dtype = compute_dtype(emb.scalar_type());
  const at::Tensor centers = centers_in.to(acc_dtype).contiguous();
  const auto layout = describe_cosine_inputs(emb, centers.size(0), label, lengths);
  const auto options = emb.options().dtype(acc_dtype);
  at::Tensor per_utterance = at::empty({layout.batch}, options);
  at::Tensor score = at::empty({layout.batch}, options);
  at::Tensor pooled = at::empty({layout.batch, layout.dim}, options);
  const auto kind = static_cast<Epilogue>(epilogue);
  cosine_forward(
      emb, centers, layout, kind, scale, margin_bonafide, margin_spoof, bonafide_label, 0,
      math::score_center(kind, bonafide_label), per_utterance, score, pooled);
  if (static_cast<Reduction>(reduction) == Reduction::kNone) {
    return {per_utterance, score, pooled};
  }
  at::Tensor loss = at::empty({}, options);
  const bool mean = static_cast<Reduction>(reduction) == Reduction::kMean;
  AT_DISPATCH_FLOATING_TYPES(acc_dtype, "cosine_margin_loss_cuda_reduce", [&] {
    cuda::launch_reduce_loss<scalar_t>(
        per_utterance.const_data_ptr<scalar_t>(), layout.batch, mean, loss.mutable_data_ptr<scalar_t>(),
        at::cuda::getCurrentCUDAStream());
  });
  return {loss, score, pooled};
}

std::tuple<at::Tensor, at::Tensor> cosine_score_cuda(
    const at::Tensor& emb_in, const at::Tensor& centers_in, const c10::optional<at::Tensor>& lengths,
    int64_t center_index) {
  const auto kCosine = static_cast<int64_t>(Epilogue::kCosine);
  check_cosine_inputs(emb_in, centers_in, c10::nullopt, lengths, kCosine, center_index, 0);
  const c10::cuda::CUDAGuard device_guard(emb_in.device());
  const at::Tensor emb = with_unit_feature_stride(emb_in);
  const auto acc_dtype = compute_dtype(emb.scalar_type());
  const at::Tensor centers = centers_in.to(acc_dtype).contiguous();
  const auto layout = describe_cosine_inputs(emb, centers.size(0), c10::nullopt, lengths);
  const auto options = emb.options().dtype(acc_dtype);
  at::Tensor score = at::empty({layout.batch}, options);
  at::Tensor pooled = at::empty({layout.batch, layout.dim}, options);
  cosine_forward(
      emb, centers, layout, Epilogue::kCosine, 1.0, 0.0, 0.0, 0, center_index, center_index, at::Tensor(), score,
      pooled);
  return {score, pooled};
}

std::tuple<at::Tensor, at::Tensor> cosine_margin_loss_backward_cuda(
    const at::Tensor& grad_loss_in, const at::Tensor& pooled_in, const at::Tensor& centers_in,
    const c10::optional<at::Tensor>& label, const c10::optional<at::Tensor>& lengths, c10::SymIntArrayRef emb_sym_sizes,
    c10::ScalarType emb_dtype, int64_t epilogue, double scale, double margin_bonafide, double margin_spoof,
    int64_t bonafide_label, int64_t reduction) {
  const auto emb_sizes = C10_AS_INTARRAYREF_SLOW(emb_sym_sizes);
  check_cosine_backward_inputs(
      grad_loss_in, pooled_in, centers_in, label, lengths, emb_sizes, emb_dtype, epilogue, bonafide_label, reduction);
  const c10::cuda::CUDAGuard device_guard(pooled_in.device());
  const auto acc_dtype = pooled_in.scalar_type();
  const at::Tensor pooled = pooled_in.contiguous();
  const at::Tensor grad_loss = grad_loss_in.to(acc_dtype).contiguous();
  const at::Tensor centers = centers_in.to(acc_dtype).contiguous();
  const auto layout = describe_cosine_backward(emb_sizes, centers.size(0), label, lengths);
  const auto options = pooled.options();
  at::Tensor grad_emb = at::empty(emb_sizes, options.dtype(emb_dtype));
  at::Tensor grad_centers = at::empty(centers.sizes(), options);
  // Scratch: the per-utterance gradient row and the centre-gradient coefficients.
  at::Tensor frame_grad = at::empty({layout.batch, layout.dim}, options);
  at::Tensor alpha = at::empty({layout.batch, kMaxCenters}, options);
  at::Tensor g_cos = at::empty({layout.batch, kMaxCenters}, options);
  const bool is_score = static_cast<Epilogue>(epilogue) == Epilogue::kCosine;
  const int64_t chunks = time_chunks_here(layout);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, emb_dtype, "cosine_margin_loss_backward_cuda", [&] {
    using acc_t = cuda::acc_of<scalar_t>;
    cuda::launch_cosine_backward<scalar_t>(
        grad_loss.const_data_ptr<acc_t>(), pooled.const_data_ptr<acc_t>(), centers.const_data_ptr<acc_t>(), layout,
        static_cast<Epilogue>(epilogue), static_cast<Reduction>(reduction),
        margin_params<acc_t>(scale, margin_bonafide, margin_spoof, is_score ? 0 : bonafide_label),
        is_score ? bonafide_label : 0, chunks, frame_grad.mutable_data_ptr<acc_t>(), alpha.mutable_data_ptr<acc_t>(),
        g_cos.mutable_data_ptr<acc_t>(), grad_emb.mutable_data_ptr<scalar_t>(), grad_centers.mutable_data_ptr<acc_t>(),
        at::cuda::getCurrentCUDAStream());
  });
  return {grad_emb, grad_centers.to(centers_in.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(spoofloss, CUDA, m) {
  m.impl("cosine_margin_loss", &cosine_margin_loss_cuda);
  m.impl("cosine_score", &cosine_score_cuda);
  m.impl("_cosine_margin_loss_backward", &cosine_margin_loss_backward_cuda);
}

}  // namespace spoofloss
