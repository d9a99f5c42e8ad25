// Host side of the CUDA cosine-margin ops: validation, allocation, dtype
// dispatch and registration. The kernels are in cosine_margin_kernel.cu.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../validation.h"
#include "host_runtime.h"
#include "launch.h"

namespace spoofloss {
namespace {

cuda::CosinePlan plan_for(const CosineLayout& layout, c10::ScalarType emb_dtype) {
  const int acc_bytes = emb_dtype == at::kDouble ? 8 : 4;
  return cuda::plan_cosine(
      layout.batch, layout.frames, layout.dim, static_cast<int>(c10::elementSize(emb_dtype)), acc_bytes,
      cuda::max_grid_x());
}

// The scratch buffers of one call carved from one allocation (one trip to the
// allocator instead of five); each buffer starts 128-byte aligned.
class ScratchLayout {
 public:
  int64_t add(int64_t elements) {
    const int64_t at = total_;
    total_ += (elements + kAlign - 1) / kAlign * kAlign;
    return at;
  }
  at::Tensor allocate(const at::TensorOptions& options) const {
    return cuda::empty_scratch({total_}, options);
  }

 private:
  static constexpr int64_t kAlign = 32;  // elements: 128 bytes of float, 256 of double
  int64_t total_ = 0;
};

// Forward of the loss and the score (args.per_utterance undefined).
void run_cosine_forward(
    const CosineForwardArgs& args, int64_t loss, double scale, double margin_bonafide, double margin_spoof,
    int64_t bonafide_label, int64_t score_rule, int64_t score_center) {
  const auto& layout = args.layout;
  const cuda::CosinePlan plan = plan_for(layout, args.emb.scalar_type());
  ScratchLayout parts;
  const int64_t center_sq_at = parts.add(layout.num_centers);
  const int64_t partial_at = parts.add(layout.batch * plan.chunks * layout.dim);  // [B, chunks, D]
  at::Tensor scratch = parts.allocate(args.pooled.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.emb.scalar_type(), "cosine_forward_cuda", [&] {
    using acc_t = cuda::acc_of<scalar_t>;
    acc_t* base = scratch.mutable_data_ptr<acc_t>();
    cuda::launch_cosine_forward<scalar_t>(
        args.emb.const_data_ptr<scalar_t>(), args.centers.const_data_ptr<acc_t>(), layout,
        cosine_epilogue<acc_t>(loss, scale, margin_bonafide, margin_spoof, bonafide_label, score_rule, score_center),
        plan, cuda::CosineForwardScratch<acc_t>{base + center_sq_at, base + partial_at},
        args.per_utterance.defined() ? args.per_utterance.mutable_data_ptr<acc_t>() : nullptr,
        args.score.mutable_data_ptr<acc_t>(), args.pooled.mutable_data_ptr<acc_t>(), cuda::current_stream());
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cosine_margin_loss_cuda(
    const at::Tensor& emb, const at::Tensor& centers, const at::Tensor& label, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& center_index, int64_t loss, double scale, double margin_bonafide,
    double margin_spoof, int64_t bonafide_label, int64_t score_rule, int64_t score_center, int64_t reduction) {
  // Validation first: a guard taken on a CPU tensor's device would fail with
  // CUDA's message instead of the library's.
  const auto args = prepare_cosine_forward(
      emb, centers, label, lengths, center_index, loss, bonafide_label, score_rule, score_center, reduction);
  const cuda::DeviceGuard device_guard(emb.device());
  run_cosine_forward(args, loss, scale, margin_bonafide, margin_spoof, bonafide_label, score_rule, score_center);
  if (static_cast<Reduction>(reduction) == Reduction::kNone) {
    return {args.per_utterance, args.score, args.pooled};
  }
  at::Tensor reduced = at::empty({}, args.per_utterance.options());
  const bool mean = static_cast<Reduction>(reduction) == Reduction::kMean;
  AT_DISPATCH_FLOATING_TYPES(reduced.scalar_type(), "cosine_margin_loss_cuda_reduce", [&] {
    cuda::launch_reduce_loss<scalar_t>(
        args.per_utterance.const_data_ptr<scalar_t>(), args.layout.batch, mean, reduced.mutable_data_ptr<scalar_t>(),
        cuda::current_stream());
  });
  return {reduced, args.score, args.pooled};
}

std::tuple<at::Tensor, at::Tensor> cosine_score_cuda(
    const at::Tensor& emb, const at::Tensor& centers, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& center_index, int64_t score_rule, int64_t score_center, double scale) {
  const int64_t none = static_cast<int64_t>(Reduction::kNone);
  const auto args = prepare_cosine_forward(
      emb, centers, c10::nullopt, lengths, center_index, kNoLoss, /*bonafide_label=*/0, score_rule, score_center, none);
  const cuda::DeviceGuard device_guard(emb.device());
  run_cosine_forward(args, kNoLoss, scale, 0.0, 0.0, 0, score_rule, score_center);
  return {args.score, args.pooled};
}

std::tuple<at::Tensor, at::Tensor> cosine_margin_loss_backward_cuda(
    const c10::optional<at::Tensor>& grad_loss, const c10::optional<at::Tensor>& grad_score, const at::Tensor& pooled,
    const at::Tensor& centers, const c10::optional<at::Tensor>& label, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& center_index, c10::SymIntArrayRef emb_sizes, c10::ScalarType emb_dtype,
    int64_t loss, double scale, double margin_bonafide, double margin_spoof, int64_t bonafide_label,
    int64_t score_rule, int64_t score_center, int64_t reduction) {
  const auto args = prepare_cosine_backward(
      grad_loss, grad_score, pooled, centers, label, lengths, center_index, emb_sizes, emb_dtype, loss,
      bonafide_label, score_rule, score_center, reduction);
  const cuda::DeviceGuard device_guard(pooled.device());
  const auto& layout = args.layout;
  const cuda::CosinePlan plan = plan_for(layout, emb_dtype);
  ScratchLayout parts;
  const int64_t center_sq_at = parts.add(layout.num_centers);
  const int64_t frame_grad_at = parts.add(layout.batch * layout.dim);  // [B, D]
  const int64_t alpha_at = parts.add(layout.batch * layout.num_centers);  // [B, C]
  const int64_t g_cos_at = parts.add(layout.batch * layout.num_centers);  // [B, C]
  const int64_t partials_at = parts.add(plan.batch_segments * layout.num_centers * layout.dim);  // [S, C, D]
  at::Tensor scratch = parts.allocate(args.pooled.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, emb_dtype, "cosine_margin_loss_backward_cuda", [&] {
    using acc_t = cuda::acc_of<scalar_t>;
    acc_t* base = scratch.mutable_data_ptr<acc_t>();
    cuda::launch_cosine_backward<scalar_t>(
        args.grad_loss.defined() ? args.grad_loss.const_data_ptr<acc_t>() : nullptr,
        args.grad_score.defined() ? args.grad_score.const_data_ptr<acc_t>() : nullptr,
        args.pooled.const_data_ptr<acc_t>(), args.centers.const_data_ptr<acc_t>(), layout,
        cosine_epilogue<acc_t>(loss, scale, margin_bonafide, margin_spoof, bonafide_label, score_rule, score_center),
        static_cast<Reduction>(reduction), plan,
        cuda::CosineBackwardScratch<acc_t>{
            base + center_sq_at, base + frame_grad_at, base + alpha_at, base + g_cos_at, base + partials_at},
        args.grad_emb.mutable_data_ptr<scalar_t>(), args.grad_centers.mutable_data_ptr<acc_t>(),
        cuda::current_stream());
  });
  return args.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(spoofloss, SPOOFLOSS_CUDA_DISPATCH_KEY, m) {
  m.impl("cosine_margin_loss", &cosine_margin_loss_cuda);
  m.impl("cosine_score", &cosine_score_cuda);
  m.impl("_cosine_margin_loss_backward", &cosine_margin_loss_backward_cuda);
}

}  // namespace spoofloss
