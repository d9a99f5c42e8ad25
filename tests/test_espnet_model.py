"""spoofloss inside ESPnet's own ASVSpoof model and task (espnet pinned in
scripts/requirements-espnet.txt; scripts/install_espnet.sh installs it).

The model is espnet2.asvspoof.espnet_model.ESPnetASVSpoofModel with a small
encoder and decoder of this file's own (ESPnet's LinearDecoder is a template
that returns None), fed a padded batch. What is checked:

* spoofloss's losses pass the model's typeguard check of ``losses``;
* ESPnet's model as it is: centres outside model.parameters() until
  ``spoofloss.espnet.register_losses``, lengths ignored, and a KeyError for an
  OC-softmax loss configured alone;
* ``spoofloss.espnet_model.SpooflossASVSpoofModel``: centres trained, moved and
  saved, lengths passed, scored by the loss it trains;
* ``spoofloss.espnet_train``: the asvspoof task's loss names resolve to
  spoofloss's classes, a YAML config builds that model, and two epochs of
  ESPnet's own training loop step, save and reload the centre.

Loss values and the gradients of every parameter are compared, in float64,
with the same model run through spoofloss.reference; the binary loss also with
ESPnet's own ASVSpoofBinaryLoss, in float32.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from importlib import metadata
from pathlib import Path
from typing import Dict

import pytest
import torch

REQUIREMENTS = Path(__file__).resolve().parents[1] / "scripts" / "requirements-espnet.txt"


def _pinned_espnet() -> str:
    for line in REQUIREMENTS.read_text().splitlines():
        match = re.fullmatch(r"espnet==(\S+)", line.split("#", 1)[0].strip())
        if match:
            return match.group(1)
    raise RuntimeError(f"no espnet==<version> line in {REQUIREMENTS}")


if not REQUIREMENTS.is_file():  # tests/ copied without the source tree (scripts/check_wheel.sh does that)
    pytest.skip(f"the espnet pin, {REQUIREMENTS}, is not beside this tests/ folder", allow_module_level=True)
ESPNET_PIN = _pinned_espnet()
try:
    ESPNET_INSTALLED = metadata.version("espnet")
except metadata.PackageNotFoundError:
    pytest.skip(f"espnet=={ESPNET_PIN} not installed; scripts/install_espnet.sh installs it", allow_module_level=True)
if ESPNET_INSTALLED != ESPNET_PIN:
    pytest.skip(
        f"espnet {ESPNET_INSTALLED} is installed, these tests are written against espnet=={ESPNET_PIN} "
        "(scripts/install_espnet.sh installs it)",
        allow_module_level=True,
    )

# espnet is installed at the pinned version: from here on an import error is a failure, not a skip.
import typeguard  # noqa: E402
from espnet2.asr.encoder.abs_encoder import AbsEncoder  # noqa: E402
from espnet2.asvspoof.decoder.abs_decoder import AbsDecoder  # noqa: E402
from espnet2.asvspoof.espnet_model import ESPnetASVSpoofModel  # noqa: E402
from espnet2.asvspoof.loss.abs_loss import AbsASVSpoofLoss as EspnetAbsASVSpoofLoss  # noqa: E402
from espnet2.asvspoof.loss.binary_loss import ASVSpoofBinaryLoss as EspnetBinaryLoss  # noqa: E402

import spoofloss  # noqa: E402
from spoofloss.espnet import (  # noqa: E402
    ESPNET_LOSS_CLASSES,
    ASVSpoofOCSoftmaxLoss,
    register_losses,
)
from spoofloss.espnet_model import SpooflossASVSpoofModel  # noqa: E402
from spoofloss.registry import LOSSES, by_espnet_name  # noqa: E402

from helpers.inputs import make_labels, make_lengths  # noqa: E402
from helpers.losses import centres_of, spec_of, twin_of  # noqa: E402
from helpers.tolerance import assert_matches  # noqa: E402

# every registered loss by the name an ESPnet config gives it
ESPNET_NAMES = [spec.espnet_name for spec in LOSSES.values()]

FEAT_DIM, ENC_DIM = 6, 16

# the order in which the model picks the loss it trains
ESPNET_NAMES_BY_PRECEDENCE = ["oc_softmax_loss", "am_softmax_loss", "binary_loss"]
ESPNET_NAMES_BY_PRECEDENCE += [name for name in ESPNET_NAMES if name not in ESPNET_NAMES_BY_PRECEDENCE]

# ESPnet's model enters torch.cuda.amp.autocast(False), deprecated in torch 2.4+
pytestmark = pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast:FutureWarning")


class FrameEncoder(AbsEncoder):
    """A per-frame projection and tanh. Padded frames come out as tanh(bias),
    not zero, as with real encoders, so a time mean over them differs."""

    def __init__(self, input_size: int, output_size: int):
        super().__init__()
        self._output_size = output_size
        self.proj = torch.nn.Linear(input_size, output_size)

    def output_size(self) -> int:
        return self._output_size

    def forward(self, xs_pad, ilens, prev_states=None):
        return torch.tanh(self.proj(xs_pad)), ilens, None


class MeanLogitDecoder(AbsDecoder):
    """What ESPnet's LinearDecoder leaves as TODOs: the mean over each
    utterance's valid frames, then one logit (sigmoid: P(bona fide))."""

    def __init__(self, encoder_output_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(encoder_output_size, 1)

    def forward(self, input, ilens):
        valid = torch.arange(input.shape[1], device=input.device)[None, :] < ilens[:, None]
        pooled = (input * valid[..., None]).sum(dim=1) / ilens[:, None].to(input.dtype)
        return self.linear(pooled)


def make_losses(names, weight: float = 1.0) -> Dict[str, torch.nn.Module]:
    """Fresh spoofloss losses under their ESPnet names, with their defaults: ESPnet's
    three as spoofloss.espnet's ESPnet-compatible classes, the others as registered."""
    losses = {}
    for name in names:
        spec = by_espnet_name()[name]
        cls = ESPNET_LOSS_CLASSES.get(name, spec.module)
        losses[name] = cls(weight=weight, enc_dim=ENC_DIM) if spec.family == "cosine" else cls(weight=weight)
    return losses


def build(losses, model_class=ESPnetASVSpoofModel):
    return model_class(frontend=None, specaug=None, normalize=None, encoder=FrameEncoder(FEAT_DIM, ENC_DIM),
                       preencoder=None, decoder=MeanLogitDecoder(ENC_DIM), losses=losses)


def make_batch(batch: int = 12, frames: int = 20, dtype=torch.float32):
    """Features [B, T, F] zero-padded past each length (as ESPnet's collate pads),
    lengths [B] with one full and one short utterance, labels [B, 1] as ESPnet's loader gives."""
    lengths = make_lengths(batch, frames)
    valid = torch.arange(frames)[None, :] < lengths[:, None]
    speech = (torch.randn(batch, frames, FEAT_DIM, dtype=torch.float64) * valid[..., None]).to(dtype)
    label = make_labels(batch)[:, None]
    return speech, lengths, label


def repad(speech, lengths):
    """The same batch with fresh random values in the padding."""
    padding = torch.arange(speech.shape[1])[None, :] >= lengths[:, None]
    return torch.where(padding[..., None], torch.randn_like(speech), speech)


class _Score(torch.nn.Module):
    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def forward(self, *args):
        return self.loss.score(*args)


def reference_loss(model, name, speech, lengths, label, use_lengths: bool):
    """(loss * weight, score) of ``model`` with its loss replaced by its twin from
    spoofloss.reference, run on the model's own parameters (so the reference's
    gradients reach them)."""
    encoder_out, encoder_out_lens = model.encode(speech, lengths)
    loss_fn = model.losses[name]
    twin, params = twin_of(loss_fn), dict(loss_fn.named_parameters())
    if spec_of(loss_fn).family == "logits":
        pred = model.decoder(encoder_out, encoder_out_lens)
        loss_args, score_args = (pred, label), (pred,)
    else:
        pool_lengths = encoder_out_lens if use_lengths else None
        loss_args, score_args = (label, encoder_out, pool_lengths), (encoder_out, pool_lengths)
    loss = torch.func.functional_call(twin, params, loss_args)
    score = torch.func.functional_call(_Score(twin), {f"loss.{k}": v for k, v in params.items()}, score_args)
    return loss * loss_fn.weight, score.reshape(-1)


def espnet_accuracy(score, label) -> float:
    """ESPnet's acc stat: a score above 0.5 is called bona fide (label 1)."""
    return ((score.reshape(-1) > 0.5) == (label.reshape(-1) > 0.5)).double().mean().item()


def check_against_reference(model, name, speech, lengths, label, use_lengths: bool):
    """model (float64) forward + backward vs the reference: loss, acc and every parameter's gradient."""
    params = [p for p in model.parameters()]
    loss, stats, weight = model(speech, lengths, label)
    assert loss.shape == (1,) and torch.isfinite(loss).all(), f"{name}: loss {loss}"
    assert weight.item() == speech.shape[0]
    grads = torch.autograd.grad(loss.sum(), params, allow_unused=True)
    ref_loss, ref_score = reference_loss(model, name, speech, lengths, label, use_lengths)
    ref_grads = torch.autograd.grad(ref_loss, params, allow_unused=True)
    assert_matches(loss[0], ref_loss, what=f"{name} loss vs reference")
    assert stats["acc"].item() == pytest.approx(espnet_accuracy(ref_score, label), rel=1e-6)
    named = [n for n, _ in model.named_parameters()]
    # atol scale: the largest gradient of the model, not of the parameter, since
    # some gradients are exactly zero in exact arithmetic (an attention key's
    # bias) and come out as rounding noise of the size of the others
    scale = max(r.abs().max().item() for r in ref_grads if r is not None)
    for param_name, g, r in zip(named, grads, ref_grads):
        assert (g is None) == (r is None), f"{name}: {param_name} gets a gradient in one path only"
        if r is not None:
            assert_matches(g, r, what=f"{name}: d loss / d {param_name}", scale=scale)
    return dict(zip(named, grads))


# --------------------------------------------------------------------------- #
# Type check
# --------------------------------------------------------------------------- #


def test_losses_pass_espnet_type_check():
    assert spoofloss.espnet.REGISTERED_WITH_ESPNET
    losses = make_losses(ESPNET_NAMES)
    plain = [spec.build(None, enc_dim=4)[0] for spec in LOSSES.values()]
    for loss in list(losses.values()) + plain:
        assert isinstance(loss, EspnetAbsASVSpoofLoss), type(loss)
        assert issubclass(type(loss), EspnetAbsASVSpoofLoss), type(loss)
        typeguard.check_type({loss.name: loss}, Dict[str, EspnetAbsASVSpoofLoss])
    # the check is live: a module that is no loss fails it, in the model's constructor too
    with pytest.raises(typeguard.TypeCheckError):
        typeguard.check_type({"oc_softmax_loss": torch.nn.Linear(2, 2)}, Dict[str, EspnetAbsASVSpoofLoss])
    with pytest.raises(typeguard.TypeCheckError):
        build({"oc_softmax_loss": torch.nn.Linear(2, 2)})
    for name in losses:
        assert build({name: losses[name]}).losses[name] is losses[name]


# --------------------------------------------------------------------------- #
# ESPnet's model as it is, with register_losses
# --------------------------------------------------------------------------- #


def test_espnet_model_keeps_centres_out_until_registered():
    losses = make_losses(["am_softmax_loss", "oc_softmax_loss"])
    model = build(losses)
    centres = [losses["am_softmax_loss"].centers, losses["oc_softmax_loss"].center]
    assert type(model.losses) is dict
    assert not any(c is p for c in centres for p in model.parameters())
    assert not any(key.startswith("losses.") for key in model.state_dict())
    model.to(torch.float64)
    assert all(c.dtype == torch.float32 for c in centres), "model.to() moved centres it does not own"

    registered = register_losses(model)
    assert isinstance(model.losses, torch.nn.ModuleDict) and model.losses is registered
    assert register_losses(model) is registered
    assert model.losses["am_softmax_loss"] is losses["am_softmax_loss"]
    assert sum(any(c is p for p in model.parameters()) for c in centres) == 2
    state = model.state_dict()
    assert torch.equal(state["losses.am_softmax_loss.centers"], centres[0].detach())
    assert torch.equal(state["losses.oc_softmax_loss.center"], centres[1].detach())
    model.to(torch.float64)
    assert model.losses["am_softmax_loss"].centers.dtype == torch.float64
    assert model.losses["oc_softmax_loss"].center.dtype == torch.float64
    model.to("meta")
    assert model.losses["oc_softmax_loss"].center.is_meta and model.encoder.proj.weight.is_meta


def test_espnet_model_with_registered_losses_trains_the_centres():
    model = build(make_losses(["am_softmax_loss"]))
    register_losses(model)
    centres = model.losses["am_softmax_loss"].centers
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    speech, lengths, label = make_batch()
    loss, _, _ = model(speech, lengths, label)
    loss.sum().backward()
    for name in ("losses.am_softmax_loss.centers", "encoder.proj.weight", "encoder.proj.bias"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().max() > 0, name
    grad = centres.grad.clone()
    optimiser.step()
    torch.testing.assert_close(centres.detach(), before["losses.am_softmax_loss.centers"] - 0.5 * grad)


@pytest.mark.parametrize("name", ["am_softmax_loss", "binary_loss"])
def test_espnet_model_matches_reference_without_lengths(name):
    """ESPnet's model never passes encoder_out_lens: AM-softmax pools over the
    padded frames too, and its value depends on what the padding holds."""
    model = build(make_losses([name], weight=0.7)).to(torch.float64)
    register_losses(model)
    speech, lengths, label = make_batch(dtype=torch.float64)
    grads = check_against_reference(model, name, speech, lengths, label, use_lengths=False)
    assert grads["encoder.proj.weight"].abs().max() > 0
    if name == "am_softmax_loss":
        assert grads["losses.am_softmax_loss.centers"].abs().max() > 0
        padding_changed = model(repad(speech, lengths), lengths, label)[0]
        assert not torch.allclose(padding_changed, model(speech, lengths, label)[0])
    else:
        assert grads["decoder.linear.weight"].abs().max() > 0


def test_espnet_model_needs_am_softmax_loss_to_score_oc_softmax():
    """ESPnet's forward scores with losses["am_softmax_loss"] whatever it trains."""
    model = build(make_losses(["oc_softmax_loss"]))
    speech, lengths, label = make_batch()
    with pytest.raises(KeyError, match="am_softmax_loss"):
        model(speech, lengths, label)
    # with both configured it trains OC-softmax and reports AM-softmax's accuracy
    model = build(make_losses(["oc_softmax_loss", "am_softmax_loss"])).to(torch.float64)
    register_losses(model)
    speech, lengths, label = make_batch(dtype=torch.float64)
    loss, stats, _ = model(speech, lengths, label)
    oc_loss, _ = reference_loss(model, "oc_softmax_loss", speech, lengths, label, use_lengths=False)
    _, am_score = reference_loss(model, "am_softmax_loss", speech, lengths, label, use_lengths=False)
    assert_matches(loss[0], oc_loss, what="ESPnet model, OC + AM configured: loss")
    assert stats["acc"].item() == pytest.approx(espnet_accuracy(am_score, label), rel=1e-6)


def test_binary_loss_in_espnet_model_equals_espnets_own():
    """The same model with ESPnet's ASVSpoofBinaryLoss and with spoofloss's, float32."""
    ours = build(make_losses(["binary_loss"], weight=0.5))
    theirs = copy.deepcopy(ours)
    theirs.losses = {"binary_loss": EspnetBinaryLoss(weight=0.5)}
    speech, lengths, label = make_batch(batch=32)
    results = []
    for model in (ours, theirs):
        loss, stats, _ = model(speech, lengths, label)
        grads = torch.autograd.grad(loss.sum(), list(model.parameters()))
        results.append((loss, stats, grads))
    (loss, stats, grads), (espnet_loss, espnet_stats, espnet_grads) = results
    torch.testing.assert_close(loss, espnet_loss)
    assert stats["acc"].item() == espnet_stats["acc"].item()
    for (name, _), g, r in zip(ours.named_parameters(), grads, espnet_grads):
        torch.testing.assert_close(g, r, msg=lambda m, name=name: f"d loss / d {name}: {m}")


# --------------------------------------------------------------------------- #
# SpooflossASVSpoofModel
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("names", [(name,) for name in ESPNET_NAMES] + [
    ("oc_softmax_loss", "am_softmax_loss", "binary_loss"), tuple(ESPNET_NAMES)[::-1]],
    ids=ESPNET_NAMES + ["espnets-three", "every-registered"])
def test_spoofloss_model_matches_reference_with_lengths(names):
    """Lengths reach the loss (padding no longer matters), the loss trained is
    ESPnet's choice (OC, then AM, then binary; then the first other registered
    loss), and acc comes from its score."""
    model = build(make_losses(names, weight=0.8), SpooflossASVSpoofModel).to(torch.float64)
    trained = min(names, key=ESPNET_NAMES_BY_PRECEDENCE.index)
    assert model.trained_loss_name == trained
    speech, lengths, label = make_batch(dtype=torch.float64)
    grads = check_against_reference(model, trained, speech, lengths, label, use_lengths=True)
    assert grads["encoder.proj.weight"].abs().max() > 0
    if by_espnet_name()[trained].family == "logits":
        assert grads["decoder.linear.weight"].abs().max() > 0
    else:
        centres = next(n for n, p in model.losses[trained].named_parameters() if p is centres_of(model.losses[trained]))
        assert grads[f"losses.{trained}.{centres}"].abs().max() > 0
        # the decoder's output is not used by the cosine losses, so it is not run
        assert grads["decoder.linear.weight"] is None
    repadded = model(repad(speech, lengths), lengths, label)[0]
    torch.testing.assert_close(repadded, model(speech, lengths, label)[0], rtol=1e-12, atol=0)


def test_spoofloss_model_owns_trains_and_saves_its_centres():
    model = build(make_losses(["oc_softmax_loss"]), SpooflossASVSpoofModel)
    center = model.losses["oc_softmax_loss"].center
    assert isinstance(model.losses, torch.nn.ModuleDict)
    assert any(p is center for p in model.parameters())
    optimiser = torch.optim.SGD(model.parameters(), lr=0.25)
    speech, lengths, label = make_batch()
    before = center.detach().clone()
    model(speech, lengths, label)[0].sum().backward()
    assert torch.isfinite(center.grad).all() and center.grad.abs().max() > 0
    step = 0.25 * center.grad.clone()
    optimiser.step()
    torch.testing.assert_close(center.detach(), before - step)

    restored = build(make_losses(["oc_softmax_loss"]), SpooflossASVSpoofModel)
    restored.load_state_dict(model.state_dict())  # strict: the centre is among the keys
    assert torch.equal(restored.losses["oc_softmax_loss"].center.detach(), center.detach())
    model.to(torch.float64)
    assert model.losses["oc_softmax_loss"].center.dtype == torch.float64


def test_spoofloss_model_from_espnet_model_shares_parts():
    stock = build(make_losses(["am_softmax_loss"]))
    model = SpooflossASVSpoofModel.from_model(stock)
    assert model.encoder is stock.encoder and model.decoder is stock.decoder
    assert model.losses["am_softmax_loss"] is stock.losses["am_softmax_loss"]


def test_spoofloss_model_rejects_unknown_losses():
    with pytest.raises(ValueError, match="oc_softmax_loss"):
        build({"my_loss": ASVSpoofOCSoftmaxLoss(enc_dim=ENC_DIM)}, SpooflossASVSpoofModel)


# --------------------------------------------------------------------------- #
# The asvspoof task: loss choices and a YAML config
# --------------------------------------------------------------------------- #


@pytest.fixture
def asvspoof_task(monkeypatch):
    """espnet2.tasks.asvspoof with its loss choices restored after the test."""
    import espnet2.tasks.asvspoof as task

    monkeypatch.setattr(task.losses_choices, "classes", dict(task.losses_choices.classes))
    return task


def test_task_loss_names_resolve_to_spoofloss(asvspoof_task):
    from spoofloss.espnet_train import register_loss_choices

    choices = asvspoof_task.losses_choices
    espnet_classes = {name: choices.get_class(name) for name in ("binary_loss", "am_softmax_loss", "oc_softmax_loss")}
    assert all(cls.__module__.startswith("espnet2.") for cls in espnet_classes.values())
    # why replacing them loses nothing: ESPnet's AM- and OC-softmax cannot be constructed
    for name in ("am_softmax_loss", "oc_softmax_loss"):
        with pytest.raises(AttributeError):
            espnet_classes[name](enc_dim=ENC_DIM)

    register_loss_choices()
    register_loss_choices()
    for name, cls in ESPNET_LOSS_CLASSES.items():
        assert choices.get_class(name) is cls, "ESPnet's three names resolve to spoofloss.espnet's classes"
    for spec in LOSSES.values():  # every registered loss by its ESPnet name
        cls = choices.get_class(spec.espnet_name)
        assert issubclass(cls, spec.module) and issubclass(cls, choices.base_type), (spec.name, cls)


YAML_CONFIG = """\
input_size: {feat_dim}
frontend: null
normalize: null
encoder: transformer
encoder_conf:
    output_size: {enc_dim}
    attention_heads: 2
    linear_units: 32
    num_blocks: 1
    input_layer: linear
losses:
  - name: oc_softmax_loss
    conf:
      weight: 0.9
      m_real: 0.6
      m_fake: 0.3
"""


def test_task_builds_spoofloss_model_from_yaml_config(asvspoof_task, tmp_path):
    from spoofloss.espnet_train import SpooflossASVSpoofTask

    config = tmp_path / "train_asvspoof.yaml"
    config.write_text(YAML_CONFIG.format(feat_dim=FEAT_DIM, enc_dim=ENC_DIM))
    args = SpooflossASVSpoofTask.get_parser().parse_args(["--config", str(config)])
    model = SpooflossASVSpoofTask.build_model(args)
    assert type(model) is SpooflossASVSpoofModel
    assert type(model.encoder).__name__ == "TransformerEncoder"
    loss_fn = model.losses["oc_softmax_loss"]
    assert type(loss_fn) is ASVSpoofOCSoftmaxLoss
    assert (loss_fn.weight, loss_fn.m_real, loss_fn.m_fake, loss_fn.alpha) == (0.9, 0.6, 0.3, 20.0)
    assert tuple(loss_fn.center.shape) == (1, ENC_DIM)  # enc_dim from the encoder, as ESPnet's task passes it
    assert any(p is loss_fn.center for p in model.parameters())

    model = model.to(torch.float64).eval()  # eval: no dropout, so the reference sees the same encoder output
    speech, lengths, label = make_batch(dtype=torch.float64)
    grads = check_against_reference(model, "oc_softmax_loss", speech, lengths, label, use_lengths=True)
    assert grads["losses.oc_softmax_loss.center"].abs().max() > 0
    assert all(g is not None and g.abs().max() > 0 for n, g in grads.items() if n.startswith("encoder.embed"))


GENERIC_YAML_CONFIG = """\
input_size: {feat_dim}
frontend: null
normalize: null
encoder: transformer
encoder_conf:
    output_size: {enc_dim}
    attention_heads: 2
    linear_units: 32
    num_blocks: 1
    input_layer: linear
decoder: mean_logit
losses:
  - name: {name}
    conf:
      weight: 0.9
"""


@pytest.mark.parametrize("name", ESPNET_NAMES)
def test_yaml_config_selects_every_registered_loss(asvspoof_task, tmp_path, monkeypatch, name):
    """A config naming a registered loss by its ESPnet name builds the model with
    that loss, its centres sized by the encoder whatever the name (ESPnet's task
    passes enc_dim only to names that contain "softmax"), trained as the reference.
    The decoder is this file's MeanLogitDecoder (ESPnet 202511's only one,
    LinearDecoder, returns None), added to the task's choices for the test."""
    from spoofloss.espnet_train import SpooflossASVSpoofTask, loss_classes

    monkeypatch.setattr(asvspoof_task.decoder_choices, "classes",
                        dict(asvspoof_task.decoder_choices.classes, mean_logit=MeanLogitDecoder))
    config = tmp_path / "train_asvspoof.yaml"
    config.write_text(GENERIC_YAML_CONFIG.format(feat_dim=FEAT_DIM, enc_dim=ENC_DIM, name=name))
    args = SpooflossASVSpoofTask.get_parser().parse_args(["--config", str(config)])
    model = SpooflossASVSpoofTask.build_model(args)
    loss_fn = model.losses[name]
    assert type(loss_fn) is loss_classes()[name] and loss_fn.weight == 0.9
    if spec_of(loss_fn).family == "cosine":
        assert centres_of(loss_fn).shape[1] == ENC_DIM
        assert any(p is centres_of(loss_fn) for p in model.parameters())
    model = model.to(torch.float64).eval()
    speech, lengths, label = make_batch(dtype=torch.float64)
    check_against_reference(model, name, speech, lengths, label, use_lengths=True)


def test_yaml_config_gives_enc_dim_to_a_loss_without_softmax_in_its_name(asvspoof_task, tmp_path, monkeypatch):
    """ESPnet's task passes enc_dim only to loss names containing "softmax";
    spoofloss.espnet_train builds a registered loss with centres under any other
    name again with it (shown with OCSoftmaxLoss registered for the test under a
    second name)."""
    from spoofloss.espnet_train import SpooflossASVSpoofTask

    spec = LOSSES["oc_softmax"]
    monkeypatch.setitem(LOSSES, "one_class", dataclasses.replace(spec, name="one_class", espnet_name="one_class_loss"))
    monkeypatch.setattr(asvspoof_task.decoder_choices, "classes",
                        dict(asvspoof_task.decoder_choices.classes, mean_logit=MeanLogitDecoder))
    config = tmp_path / "train_asvspoof.yaml"
    config.write_text(GENERIC_YAML_CONFIG.format(feat_dim=FEAT_DIM, enc_dim=ENC_DIM, name="one_class_loss"))
    model = SpooflossASVSpoofTask.build_model(SpooflossASVSpoofTask.get_parser().parse_args(["--config", str(config)]))
    assert model.trained_loss_name == "one_class_loss"
    assert tuple(model.losses["one_class_loss"].center.shape) == (1, ENC_DIM)


def test_espnet_trainer_steps_and_saves_the_centre(asvspoof_task, tmp_path, monkeypatch):
    """Two epochs of ESPnet's own training loop through spoofloss.espnet_train's
    entry point, on a few random feature files: the optimiser ESPnet builds from
    model.parameters() moves the centre, every checkpoint holds it, and the
    task's build_model_from_file loads it back."""
    import numpy as np

    from spoofloss.espnet_train import SpooflossASVSpoofTask, main

    # ESPnet's training sets these process-wide; give them back to the other tests
    for flag in ("enabled", "benchmark", "deterministic"):
        monkeypatch.setattr(torch.backends.cudnn, flag, getattr(torch.backends.cudnn, flag))

    data = tmp_path / "data"
    data.mkdir()
    lengths = make_lengths(8, 15)
    labels = make_labels(8)
    with open(data / "feats.scp", "w") as feats, open(data / "label", "w") as label, open(data / "shape", "w") as shape:
        for index, (length, value) in enumerate(zip(lengths.tolist(), labels.tolist())):
            np.save(data / f"utt{index}.npy", torch.randn(length, FEAT_DIM).numpy())
            feats.write(f"utt{index} {data / f'utt{index}.npy'}\n")
            label.write(f"utt{index} {value}\n")
            shape.write(f"utt{index} {length},{FEAT_DIM}\n")
    config = tmp_path / "train_asvspoof.yaml"
    config.write_text(YAML_CONFIG.format(feat_dim=FEAT_DIM, enc_dim=ENC_DIM))
    exp = tmp_path / "exp"
    inputs = []
    for split in ("train", "valid"):
        inputs += [f"--{split}_data_path_and_name_and_type", f"{data / 'feats.scp'},speech,npy",
                   f"--{split}_data_path_and_name_and_type", f"{data / 'label'},label,text_int",
                   f"--{split}_shape_file", str(data / "shape")]
    main(["--config", str(config), "--output_dir", str(exp), "--ngpu", "0", "--num_workers", "0",
          "--batch_type", "folded", "--batch_size", "4", "--fold_length", "100", "--max_epoch", "2",
          "--optim", "sgd", "--optim_conf", "lr=0.5", "--use_preprocessor", "false",
          "--use_tensorboard", "false", "--use_matplotlib", "false", *inputs])

    key = "losses.oc_softmax_loss.center"
    epoch1 = torch.load(exp / "1epoch.pth", map_location="cpu")
    epoch2 = torch.load(exp / "2epoch.pth", map_location="cpu")
    assert tuple(epoch1[key].shape) == (1, ENC_DIM) and torch.isfinite(epoch2[key]).all()
    assert not torch.equal(epoch1[key], epoch2[key]), "ESPnet's optimiser did not step the centre"
    model, _ = SpooflossASVSpoofTask.build_model_from_file(exp / "config.yaml", exp / "2epoch.pth")
    assert torch.equal(model.losses["oc_softmax_loss"].center.detach(), epoch2[key])
