"""The training demo (python -m spoofloss.demo) runs every registered loss end
to end on a tiny problem, fused and reference side by side; not a training
test (the demo's own output shows the losses falling on real sizes)."""

from __future__ import annotations

import pytest

from spoofloss import demo
from spoofloss.registry import LOSSES

TINY = ["--device", "cpu", "--epochs", "1", "--steps", "2", "--batch", "6", "--frames", "8", "--feat-dim", "8",
        "--enc-dim", "8"]


def test_demo_trains_every_registered_loss(capsys):
    demo.main(TINY)
    out = capsys.readouterr().out
    for name, spec in LOSSES.items():
        assert f"== {spec.module.__name__} ({name};" in out, f"the demo did not train {name}"
    assert out.count("steps/s") == len(LOSSES)


def test_demo_trains_a_chosen_subset(capsys):
    name = next(iter(LOSSES))
    demo.main(TINY + ["--losses", name])
    assert capsys.readouterr().out.count("steps/s") == 1
    with pytest.raises(SystemExit):
        demo.main(TINY + ["--losses", "no_such_loss"])
