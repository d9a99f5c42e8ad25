// ctest: a C++ program linked against libspoofloss_ops.so, as a libtorch consumer
// uses it. The ops register when the library loads; this program finds them in
// the dispatcher by name, calls them on random data and compares the values and
// the gradients with results computed here from ATen's own ops, in float64.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <cstdio>
#include <optional>
#include <string>
#include <tuple>

namespace {

int failures = 0;

void check(const char* what, const at::Tensor& got, const at::Tensor& want) {
  const bool ok = got.sizes() == want.sizes() && at::allclose(got, want, /*rtol=*/1e-10, /*atol=*/1e-12);
  std::printf("  %-36s %s (max |diff| %.3g)\n", what, ok ? "ok" : "WRONG",
              got.sizes() == want.sizes() ? (got - want).abs().max().item<double>() : -1.0);
  failures += ok ? 0 : 1;
}

}  // namespace

int main() {
  at::manual_seed(0);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  auto& dispatcher = c10::Dispatcher::singleton();

  // binary_cross_entropy(pred [N], label [N], bonafide_label, reduction: 1 = mean,
  //                      class_weight or none, num_logits) -> (loss, total_weight)
  using Weights = std::optional<c10::ArrayRef<double>>;
  auto bce = dispatcher.findSchemaOrThrow("spoofloss::binary_cross_entropy", "")
                 .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t, int64_t,
                                                           Weights, int64_t)>();
  at::Tensor pred = at::randn({37}, f64).set_requires_grad(true);
  at::Tensor label = at::randint(0, 2, {37}, at::TensorOptions().dtype(at::kLong));
  at::Tensor loss = std::get<0>(bce.call(pred, label, 1, 1, std::nullopt, 1));
  loss.backward();
  check("binary_cross_entropy", loss.detach(),
        at::binary_cross_entropy_with_logits(pred.detach(), label.to(at::kDouble)));
  check("binary_cross_entropy gradient", pred.grad(), (at::sigmoid(pred.detach()) - label.to(at::kDouble)) / 37);

  // cosine_score(emb [B, T, D], centers [C, D], lengths [B], center_index [B] or none,
  //              score_rule (0: cosine with centers[score_center]), score_center, scale)
  //   -> (score [B], pooled [B, D])
  using OptionalTensor = std::optional<at::Tensor>;
  auto score_op = dispatcher.findSchemaOrThrow("spoofloss::cosine_score", "")
                      .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                const OptionalTensor&, const OptionalTensor&,
                                                                int64_t, int64_t, double)>();
  const int64_t B = 5, T = 7, D = 16;
  at::Tensor emb = at::randn({B, T, D}, f64).set_requires_grad(true);
  at::Tensor centers = at::randn({2, D}, f64).set_requires_grad(true);
  at::Tensor lengths = at::tensor(std::vector<int64_t>{7, 1, 4, 6, 3});
  at::Tensor weights = at::rand({B}, f64);
  auto [score, pooled] = score_op.call(emb, centers, lengths, std::nullopt, /*score_rule=*/0, /*score_center=*/1, 1.0);
  (score * weights).sum().backward();

  // the same from ATen's ops: time-mean over the valid frames, cosine with centers[1]
  at::Tensor emb_ref = emb.detach().clone().set_requires_grad(true);
  at::Tensor centers_ref = centers.detach().clone().set_requires_grad(true);
  at::Tensor mask = (at::arange(T).unsqueeze(0) < lengths.unsqueeze(1)).to(at::kDouble);        // [B, T]
  at::Tensor pooled_ref = (emb_ref * mask.unsqueeze(2)).sum(1) / lengths.unsqueeze(1).to(at::kDouble);  // [B, D]
  at::Tensor center = centers_ref.select(0, 1).unsqueeze(0);                                    // [1, D]
  at::Tensor score_ref = (pooled_ref * center).sum(1) / (pooled_ref.norm(2, {1}) * center.norm(2, {1}));
  (score_ref * weights).sum().backward();
  check("cosine_score", score.detach(), score_ref.detach());
  check("cosine_score pooled", pooled.detach(), pooled_ref.detach());
  check("cosine_score gradient of emb", emb.grad(), emb_ref.grad());
  check("cosine_score gradient of centers", centers.grad(), centers_ref.grad());

  if (failures) {
    std::printf("FAIL: %d check(s) of the linked op library differ from ATen\n", failures);
    return 1;
  }
  std::printf("OK: linked libspoofloss_ops; binary_cross_entropy and cosine_score, values and gradients, "
              "match ATen in float64\n");
  return 0;
}
