"""ctest: load libspoofloss_ops.so into Python with torch.ops.load_library (no
spoofloss package involved) and call the ops on random data against results
computed here with plain torch in float64, values and gradients.

    python cmake/load_library_test.py path/to/libspoofloss_ops.so
"""
import sys

import torch
import torch.nn.functional as F

library = sys.argv[1]
torch.ops.load_library(library)
ns = torch.ops.spoofloss
problems = []

# every op is registered, with a CPU kernel; the public ones with an autograd kernel
for op, needs_autograd in (("cosine_margin_loss", True), ("cosine_score", True), ("binary_cross_entropy", True),
                           ("_cosine_margin_loss_backward", False), ("_binary_cross_entropy_backward", False)):
    name = f"spoofloss::{op}"
    if not torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU"):
        problems.append(f"{op}: no CPU kernel")
    if needs_autograd and not torch._C._dispatch_has_kernel_for_dispatch_key(name, "Autograd"):
        problems.append(f"{op}: no Autograd kernel")
    print(f"  {getattr(ns, op).default._schema}")


def check(what, got, want, rtol=1e-10, atol=1e-12):
    if got.shape != want.shape or not torch.allclose(got, want, rtol=rtol, atol=atol):
        problems.append(f"{what}: got {got.flatten()[:4].tolist()}..., want {want.flatten()[:4].tolist()}...")


gen = torch.Generator().manual_seed(0)

# binary_cross_entropy(pred, label, bonafide_label=1, reduction=1 (mean)) -> (loss, total_weight),
# and its gradient: one logit per label (BCE with logits) ...
pred = torch.randn(37, generator=gen, dtype=torch.float64, requires_grad=True)
label = torch.randint(0, 2, (37,), generator=gen)
loss, _ = ns.binary_cross_entropy(pred, label, 1, 1)
loss.backward()
check("binary_cross_entropy", loss.detach(), F.binary_cross_entropy_with_logits(pred.detach(), label.double()))
check("binary_cross_entropy gradient", pred.grad, (torch.sigmoid(pred.detach()) - label.double()) / 37)
# ... and two logits with class weights (AASIST's CrossEntropyLoss(weight=[0.1, 0.9]))
logits = torch.randn(37, 2, generator=gen, dtype=torch.float64, requires_grad=True)
loss, total_weight = ns.binary_cross_entropy(logits, label, 1, 1, [0.1, 0.9], 2)
loss.backward()
want = logits.detach().requires_grad_()
want_loss = F.cross_entropy(want, label, weight=torch.tensor([0.1, 0.9], dtype=torch.float64))
want_loss.backward()
check("binary_cross_entropy, 2 logits", loss.detach(), want_loss.detach())
check("binary_cross_entropy, 2 logits, gradient", logits.grad, want.grad)
check("binary_cross_entropy, total_weight", total_weight, (0.1 + 0.8 * label.double()).sum())

# cosine_score(emb [B, T, D], centers [C, D], lengths [B], center_index None,
# score_rule 0 (cosine with centers[score_center]), score_center 1, scale): the cosine
# of the time-mean over each utterance's valid frames with centers[1]
B, T, D = 5, 7, 16
emb = torch.randn(B, T, D, generator=gen, dtype=torch.float64, requires_grad=True)
centers = torch.randn(2, D, generator=gen, dtype=torch.float64, requires_grad=True)
lengths = torch.tensor([7, 1, 4, 6, 3])
score, pooled = ns.cosine_score(emb, centers, lengths, None, 0, 1, 1.0)
weights = torch.rand(B, generator=gen, dtype=torch.float64)
(score * weights).sum().backward()

emb_ref = emb.detach().clone().requires_grad_()
centers_ref = centers.detach().clone().requires_grad_()
mask = (torch.arange(T)[None, :] < lengths[:, None]).double()                     # [B, T]
pooled_ref = (emb_ref * mask[:, :, None]).sum(1) / lengths[:, None].double()       # [B, D]
score_ref = F.cosine_similarity(pooled_ref, centers_ref[1][None, :], dim=1, eps=0)  # [B]
(score_ref * weights).sum().backward()
check("cosine_score", score.detach(), score_ref.detach())
check("cosine_score pooled", pooled.detach(), pooled_ref.detach())
check("cosine_score gradient of emb", emb.grad, emb_ref.grad)
check("cosine_score gradient of centers", centers.grad, centers_ref.grad)

if problems:
    sys.exit("FAIL: " + library + "\n  " + "\n  ".join(problems))
print(f"OK: {library} loads with torch.ops.load_library; binary_cross_entropy and cosine_score, "
      "values and gradients, match plain torch in float64")
