"""DistributedDataParallel: 2 CPU processes (gloo) training with each loss must end
with the parameters of one process trained on the concatenated batches.

The loss module is a submodule of the module DDP wraps, so the loss's centres
are parameters DDP all-reduces like the encoder's (the README recommends this).
A control run with the loss outside the DDP module shows what goes wrong
otherwise: each rank's centres follow only its own half of the data.

Why the runs agree: every loss uses reduction="mean" and both ranks get batches
of the same size B, so DDP's gradient (the mean over ranks of each rank's mean
over its B utterances) is mathematically the mean over the concatenated 2B
utterances, the gradient of the single-process run. Only float32 rounding
differs (the order of the sums), see TOLERANCE below.
"""

from __future__ import annotations

import datetime
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from spoofloss import reference
from spoofloss.registry import LOSSES

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with the gloo backend is not available")

WORLD = 2
PER_RANK = 4                       # utterances per rank and step (equal on every rank, see above)
FRAMES, FEATS, DIM = 10, 6, 8
STEPS = 4
LR, MOMENTUM = 0.1, 0.9
NAMES = tuple(LOSSES)  # every registered loss, in its default configuration
WITH_CENTRES = tuple(name for name in NAMES if LOSSES[name].family == "cosine")
# A rank that dies leaves the other waiting in a collective: the process group
# times out after COLLECTIVE_TIMEOUT_S, and the test gives up after RUN_TIMEOUT_S.
COLLECTIVE_TIMEOUT_S = 60
RUN_TIMEOUT_S = 120

# Float32 parameters of size O(1) (the initialisation's scale): each step adds
# lr * grad, and the DDP and single-process gradients differ only in the order
# in which the per-utterance terms are summed, a relative error of a few float32
# ulps (1.2e-7) of the terms' size. Momentum and STEPS steps carry those errors
# forward; 1e-5 relative plus 1e-6 absolute leaves room for that, while a
# training that differs in substance (unsynchronised centres, a gradient summed
# instead of averaged, a lost utterance) moves parameters by 1e-3 or more (the
# control run below measures it).
RTOL, ATOL = 1e-5, 1e-6


class Trainee(nn.Module):
    """Encoder (frame-wise MLP: feats [B, T, F] -> emb [B, T, D]), a decoder to
    one logit for the logit losses, and the loss itself, so that DDP
    synchronises the loss's parameters (the centres)."""

    def __init__(self, name: str):
        super().__init__()
        torch.manual_seed(1234)  # the same initial parameters in every process
        self.family = LOSSES[name].family
        self.encoder = nn.Sequential(nn.Linear(FEATS, DIM), nn.Tanh(), nn.Linear(DIM, DIM))
        if self.family == "logits":
            self.decoder = nn.Linear(DIM, 1)
            self.loss = LOSSES[name].build(None)[0]
        else:
            self.loss = LOSSES[name].build(None, enc_dim=DIM)[0]

    def forward(self, feats, label, lengths, extra, loss=None):
        loss = self.loss if loss is None else loss
        emb = self.encoder(feats)
        if self.family == "logits":
            pred = self.decoder(reference.masked_mean(emb, lengths)).squeeze(-1)
            return loss(pred, label, **extra)
        return loss(label, emb, lengths, **extra)


def centre_names(name: str) -> set:
    """The loss's parameters (its centres), as the trained module names them."""
    return {f"loss.{n}" for n, _ in Trainee(name).loss.named_parameters()}


def global_batch(name: str, step: int):
    """The concatenated batch of one step: rank r trains on rows [r * PER_RANK, (r + 1) * PER_RANK)."""
    gen = torch.Generator().manual_seed(100 + step)
    n = WORLD * PER_RANK
    loss = Trainee(name).loss
    classes = LOSSES[name].label_classes(loss)
    feats = torch.randn(n, FRAMES, FEATS, generator=gen)
    label = torch.randint(0, classes, (n,), generator=gen)
    label[:2] = torch.tensor([0, 1])
    lengths = torch.randint(1, FRAMES + 1, (n,), generator=gen)
    lengths[::3] = FRAMES
    # frames past an utterance's length are padding: garbage that must not matter
    feats[torch.arange(FRAMES)[None, :] >= lengths[:, None]] = 1e3
    extra = LOSSES[name].make_inputs(loss, n, gen) if LOSSES[name].make_inputs else {}
    return feats, label, lengths, extra


def train(name: str, rank: int | None = None, loss_in_ddp: bool = True):
    """STEPS SGD steps. rank None: one process on the concatenated batches; otherwise
    this rank's share under DDP (the loss inside the DDP module, or beside it)."""
    model = Trainee(name)
    if rank is None:
        step_fn = model
    elif loss_in_ddp:
        step_fn = DistributedDataParallel(model)
    else:
        loss = model.loss
        del model.loss  # DDP must not see it; the optimizer still updates it
        step_fn = DistributedDataParallel(model)
        model.loss_outside = loss
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    for step in range(STEPS):
        feats, label, lengths, extra = global_batch(name, step)
        if rank is not None:
            rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
            feats, label, lengths = feats[rows], label[rows], lengths[rows]
            extra = {k: v[rows] for k, v in extra.items()}
        optimizer.zero_grad()
        if rank is not None and not loss_in_ddp:
            loss_value = step_fn(feats, label, lengths, extra, loss=model.loss_outside)
        else:
            loss_value = step_fn(feats, label, lengths, extra)
        loss_value.backward()
        optimizer.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _worker(rank: int, port: int, out_dir: str):
    torch.set_num_threads(1)  # two processes on a small CI machine
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    try:
        results = {name: train(name, rank) for name in NAMES}
        results["control"] = {name: train(name, rank, loss_in_ddp=False) for name in WITH_CENTRES}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ranks(worker, out_dir: str):
    """Spawn WORLD ranks of worker(rank, port, out_dir) and wait for them; a child's
    exception fails the test with its traceback, a hang after RUN_TIMEOUT_S."""
    context = mp.start_processes(worker, args=(free_port(), out_dir), nprocs=WORLD, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    # join() returns True once every rank exited cleanly and raises, with the
    # child's traceback, when one failed
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
                    process.join(5)
            pytest.fail(f"the {WORLD} DDP ranks did not finish within {RUN_TIMEOUT_S} s (hung collective?)")
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(WORLD)]


def max_excess(actual: torch.Tensor, expected: torch.Tensor):
    """(largest |actual - expected|, index where the tolerance is exceeded most, excess ratio)."""
    diff = (actual - expected).abs()
    ratio = diff / (ATOL + RTOL * expected.abs())
    worst = int(ratio.argmax())
    return diff.max().item(), tuple(torch.unravel_index(torch.tensor(worst), ratio.shape)), ratio.max().item()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return run_ranks(_worker, str(tmp_path_factory.mktemp("ddp")))


@pytest.mark.parametrize("name", NAMES)
def test_ddp_equals_single_process_on_concatenated_batch(ranks, name):
    single = train(name)
    initial = {n: p.detach() for n, p in Trainee(name).named_parameters()}
    assert centre_names(name) <= set(single), f"the loss's centres are not parameters of the trained module: {set(single)}"
    for rank, result in enumerate(ranks):
        assert set(result[name]) == set(single), f"rank {rank} trained other parameters"
        for param, expected in single.items():
            actual = result[name][param]
            assert actual.shape == expected.shape and actual.dtype == expected.dtype == torch.float32, param
            # the ranks apply the same all-reduced gradients: bit for bit the same parameters
            assert torch.equal(actual, ranks[0][name][param]), f"{name} {param}: rank {rank} differs from rank 0"
            biggest, where, excess = max_excess(actual, expected)
            assert excess <= 1.0, (
                f"{name} {param} (rank {rank}): DDP and single-process differ by up to {biggest:.3g}; at {where}: "
                f"{actual[where].item()!r} vs {expected[where].item()!r} (rtol {RTOL}, atol {ATOL})")
            # not vacuous: the training moved every parameter far beyond the tolerance
            moved = (expected - initial[param]).abs().max().item()
            assert moved > 100 * (ATOL + RTOL * expected.abs().max().item()), f"{name} {param} barely moved ({moved:.3g})"


@pytest.mark.parametrize("name", WITH_CENTRES)
def test_centres_outside_the_ddp_module_drift_apart(ranks, name):
    """The control: DDP leaves parameters it does not wrap to each rank, so the centres of a
    loss kept beside the DDP module end different on the two ranks (the test above can fail)."""
    for param in centre_names(name):
        outside = param.replace("loss.", "loss_outside.", 1)
        rank0, rank1 = (result["control"][name][outside] for result in ranks)
        _, _, excess = max_excess(rank1, rank0)
        assert excess > 100, f"{name}: centres outside DDP should differ between ranks, excess only {excess:.3g}"
