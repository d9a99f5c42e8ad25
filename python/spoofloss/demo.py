"""Train a toy spoofing countermeasure with each spoofloss loss, fused vs reference.

    python -m spoofloss.demo [--device cpu|cuda] [--epochs 4] [--steps 15] [--seed 0] [--losses a,b]

Synthetic data: utterances of random length in [T/4, T] frames of D features; bona
fide frames scatter around one direction, spoof frames around another. The padded
frames after each utterance's length hold garbage that points at the *other* class,
so a loss that ignored ``lengths`` would learn the wrong thing.

Model: a per-frame encoder (Linear + tanh). For a loss on logits (``BinaryLoss``) a
head mean-pools the valid frames and maps them to one logit; the cosine losses
(``AMSoftmaxLoss``, ``OCSoftmaxLoss``, ...) take the frame embeddings and the lengths
themselves (they pool inside the fused kernel).

The losses are those of ``spoofloss.registry`` (every registered loss in its default
configuration, or the ones ``--losses`` names). For each, the fused module and its
plain-PyTorch twin from ``spoofloss.reference`` train side by side from the same
initial weights on the same batches; the demo prints each one's loss and the EER of
the loss's score (``spoofloss.metrics``) per epoch, and the training steps per second.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn as nn

import spoofloss
from spoofloss.metrics import DetectionMetrics
from spoofloss.registry import LOSSES


# --------------------------------------------------------------------------- data
class SyntheticSpoofData:
    """Deterministic batches: batch ``i`` is the same for every model that asks for it."""

    def __init__(self, batch=32, max_frames=200, feat_dim=128, signal=0.05, seed=0):
        self.batch, self.max_frames, self.feat_dim, self.signal = batch, max_frames, feat_dim, signal
        self.seed = seed
        g = torch.Generator().manual_seed(seed)
        # Two unit directions, partly aligned: class 0 = spoof, 1 = bona fide.
        base = torch.randn(feat_dim, generator=g)
        dirs = torch.stack([base + torch.randn(feat_dim, generator=g), base])
        self.dirs = dirs / dirs.norm(dim=1, keepdim=True)
        self._cache = {}

    def batch_at(self, index: int, device):
        key = (index, str(device))
        if key not in self._cache:
            self._cache[key] = self._make(index, device)
        return self._cache[key]

    def _make(self, index: int, device):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index + 1)
        B, T, D = self.batch, self.max_frames, self.feat_dim
        label = torch.randint(0, 2, (B,), generator=g)  # 1 = bona fide, 0 = spoof
        lengths = torch.randint(max(1, T // 4), T + 1, (B,), generator=g)
        padded = (torch.arange(T)[None, :] >= lengths[:, None])[..., None]  # [B, T, 1]
        # Valid frames: a weak pull towards the own class's direction plus unit noise.
        # Padded frames: garbage pointing strongly at the *other* class.
        scale = D**0.5
        mean = torch.where(padded, 3.0 * scale * self.dirs[1 - label][:, None, :],
                           self.signal * scale * self.dirs[label][:, None, :])
        x = mean + torch.randn(B, T, D, generator=g) * (1.0 + padded.float())
        return x.to(device), label.to(device), lengths.to(device)


# --------------------------------------------------------------------------- model
class FrameEncoder(nn.Module):
    def __init__(self, feat_dim: int, enc_dim: int):
        super().__init__()
        self.proj = nn.Linear(feat_dim, enc_dim)

    def forward(self, x):  # [B, T, D] -> [B, T, enc_dim]
        return torch.tanh(self.proj(x))


class PooledLogitHead(nn.Module):
    """Mean over the valid frames, then one logit per utterance."""

    def __init__(self, enc_dim: int):
        super().__init__()
        self.out = nn.Linear(enc_dim, 1)

    def forward(self, emb, lengths):
        T = emb.shape[1]
        mask = (torch.arange(T, device=emb.device)[None, :] < lengths[:, None]).to(emb.dtype)
        pooled = (emb * mask[..., None]).sum(1) / lengths[:, None].to(emb.dtype)
        return self.out(pooled).squeeze(-1)  # [B]


class Trainee:
    """Encoder (+ head for a loss on logits) + loss module + optimizer."""

    def __init__(self, loss: nn.Module, encoder: nn.Module, head: nn.Module | None, lr: float):
        self.loss, self.encoder, self.head = loss, encoder, head
        params = list(encoder.parameters()) + list(loss.parameters())
        if head is not None:
            params += list(head.parameters())
        self.opt = torch.optim.Adam(params, lr=lr)

    def step(self, x, label, lengths):
        """One optimisation step; returns (loss, score) as detached tensors (no host sync)."""
        emb = self.encoder(x)
        if self.head is not None:  # a loss on logits: loss(pred, label), score(pred)
            pred = self.head(emb, lengths)
            loss = self.loss(pred, label)
            score = self.loss.score(pred.detach())
        else:  # a cosine loss: loss(label, emb, lengths), score(emb, lengths)
            loss = self.loss(label, emb, lengths)
            with torch.no_grad():
                score = self.loss.score(emb.detach(), lengths)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach(), score


def make_pair(name: str, feat_dim: int, enc_dim: int, lr: float, seed: int, device):
    """The fused and the reference trainee of a registered loss, with identical initial weights."""
    torch.manual_seed(seed)
    spec = LOSSES[name]
    fused_loss, ref_loss = spec.build(None, enc_dim=enc_dim)  # the twin holds the same centres
    head = PooledLogitHead(enc_dim) if spec.family == "logits" else None
    encoder = FrameEncoder(feat_dim, enc_dim)
    fused = Trainee(fused_loss.to(device), encoder.to(device), head.to(device) if head else None, lr)
    ref = Trainee(
        ref_loss.to(device),
        copy.deepcopy(encoder),
        copy.deepcopy(head) if head is not None else None,
        lr,
    )
    return fused, ref


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- main
def run_loss(name, data, args, device):
    fused, ref = make_pair(name, data.feat_dim, args.enc_dim, args.lr, args.seed, device)
    print(f"\n== {type(fused.loss).__name__} ({name}; ESPnet name {fused.loss.name}) ==")
    print(f"{'epoch':>5} {'loss fused':>11} {'loss ref':>11} {'|diff|':>9} {'EER fused':>10} {'EER ref':>9}")

    elapsed = {"fused": 0.0, "ref": 0.0}
    steps_done = 0
    for epoch in range(1, args.epochs + 1):
        sums = {"fused": torch.zeros((), device=device), "ref": torch.zeros((), device=device)}
        metrics = {k: DetectionMetrics() for k in ("fused", "ref")}
        for step in range(args.steps):
            x, label, lengths = data.batch_at((epoch - 1) * args.steps + step, device)
            for key, trainee in (("fused", fused), ("ref", ref)):
                sync(device)
                t0 = time.perf_counter()
                loss, score = trainee.step(x, label, lengths)
                sync(device)
                elapsed[key] += time.perf_counter() - t0
                sums[key] += loss
                metrics[key].update(score, label)
            steps_done += 1
        lf, lr_ = (sums[k].item() / args.steps for k in ("fused", "ref"))
        ef, er = (metrics[k].compute()["eer"] for k in ("fused", "ref"))
        print(f"{epoch:>5} {lf:>11.5f} {lr_:>11.5f} {abs(lf - lr_):>9.2e} {100 * ef:>9.2f}% {100 * er:>8.2f}%")

    sps = {k: steps_done / v if v > 0 else float("inf") for k, v in elapsed.items()}
    print(
        f"steps/s (encoder + loss + backward + Adam): fused {sps['fused']:.1f}, "
        f"reference {sps['ref']:.1f}  (fused is {sps['fused'] / sps['ref']:.2f}x)"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m spoofloss.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per loss (default 4)")
    parser.add_argument("--steps", type=int, default=15, help="steps per epoch (default 15)")
    parser.add_argument("--batch", type=int, default=32, help="utterances per batch (default 32)")
    parser.add_argument("--frames", type=int, default=200, help="maximum frames per utterance (default 200)")
    parser.add_argument("--feat-dim", type=int, default=128, help="input features per frame (default 128)")
    parser.add_argument("--enc-dim", type=int, default=128, help="embedding size (default 128)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--losses", default=",".join(LOSSES),
                        help=f"comma-separated registered losses (default: all, {','.join(LOSSES)})")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.steps < 1:
        parser.error("--epochs and --steps must be at least 1")
    names = [k.strip() for k in args.losses.split(",") if k.strip()]
    for name in names:
        if name not in LOSSES:
            parser.error(f"unknown loss {name!r} in --losses; registered: {', '.join(LOSSES)}")

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch.cuda.is_available() is False")

    info = spoofloss.build_info()
    print(
        f"spoofloss {spoofloss.__version__} demo on {device} | torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads | build: {info}"
    )
    print(
        f"data: batch {args.batch}, up to {args.frames} frames (lengths in "
        f"[{max(1, args.frames // 4)}, {args.frames}], padding = adversarial garbage), "
        f"{args.feat_dim} features; {args.epochs} epochs x {args.steps} steps"
    )

    data = SyntheticSpoofData(args.batch, args.frames, args.feat_dim, seed=args.seed)
    start = time.perf_counter()
    for name in names:
        run_loss(name, data, args, device)
    print(f"\ndone in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
