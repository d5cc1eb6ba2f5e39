"""The adaptation budget fits the data: small modes get enough optimizer steps by default, the
paper's sizes keep one epoch, and a mode that took few steps or gained nothing is named in a
warning (CLI flags on the command line, keyword arguments in Python)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import taugate
from taugate.cli import main
from taugate.training.budget import (
    ADAPT_MIN_STEPS,
    PYTHON_FLAGS,
    AdaptOutcome,
    adaptation_notes,
)
from taugate.training.loop import TrainConfig


def test_small_data_gets_enough_steps_and_the_paper_keeps_one_epoch():
    cfg = TrainConfig(min_steps=ADAPT_MIN_STEPS)
    assert cfg.epochs_for(500) == 100 and cfg.steps_for(500) == 200
    assert cfg.epochs_for(55_000) == 1 and cfg.steps_for(55_000) == 215  # MNIST's train split
    assert TrainConfig().steps_for(500) == 2  # min_steps=0: exactly the epochs asked
    with pytest.raises(ValueError, match="min_steps: expected >= 0, got -1"):
        TrainConfig(min_steps=-1)


def test_notes_name_the_mode_and_the_flag():
    few = adaptation_notes("drift", AdaptOutcome(3, 0.79, 0.792))
    assert len(few) == 2 and all(n.startswith("drift: ") for n in few)
    assert "only 3 optimizer steps" in few[0] and "--adapt-min-steps" in few[0]
    assert "no better than the frozen model's 0.7900" in few[1]
    assert adaptation_notes("drift", AdaptOutcome(200, 0.79, 0.85)) == []
    # a mode the foundation was pretrained on is for compute: no gain is fine, a loss is not
    assert adaptation_notes("rot0", AdaptOutcome(215, 0.9628, 0.9635, True)) == []
    worse = adaptation_notes("rot0", AdaptOutcome(215, 0.96, 0.90, True), PYTHON_FLAGS)
    assert "below the frozen model's" in worse[0] and "adapt_min_steps=" in worse[0]
    assert "--" not in worse[0]


def test_a_reused_foundation_knows_its_pretraining_modes():
    from taugate.training.runs import pretrained_modes

    meta = {"train_config": {"modes": ["rot0", "rot45"], "epochs": 2}}
    assert pretrained_modes(meta) == {"rot0", "rot45"}
    # a user's model or an older foundation JSON: no modes known, every mode must gain
    assert pretrained_modes({"family": "user"}) == set()
    assert pretrained_modes({"train_config": {"modes": "rot0"}}) == set()


def shifted_modes(seed=0, rows=500):
    """A user's tabular model trained on clean rows; the mode adds 0.8 to every feature
    (scripts/measure_small_data.py, smaller)."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(16, 4)).astype(np.float32)

    def split(n, shift):
        x = rng.normal(size=(n, 16)).astype(np.float32)
        return x + np.float32(shift), (x @ teacher).argmax(1).astype(np.int64)

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    x, y = (torch.from_numpy(a) for a in split(4000, 0.0))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(4):
        for i in range(0, len(x), 128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 128]), y[i:i + 128]).backward()
            opt.step()
    return model.eval(), {"shift": {"train": split(rows, 0.8), "test": split(1000, 0.8)}}


def test_default_budget_recovers_a_shift_on_500_rows(tmp_path):
    model, modes = shifted_modes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paper = taugate.train(modes, tmp_path / "paper", model=model, adapt_min_steps=0)
    one_epoch = paper.outcomes["shift"]
    assert one_epoch.steps == 2
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any(n.startswith("shift: the adapter took only 2 optimizer steps") and
               "adapt_min_steps=" in n for n in notes), notes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        default = taugate.train(modes, tmp_path / "default", model=model).outcomes["shift"]
    assert default.steps == ADAPT_MIN_STEPS
    assert default.adapted - default.frozen >= 0.05, default
    assert default.adapted - one_epoch.adapted >= 0.05
    assert not [w for w in caught if "shift:" in str(w.message)]


def test_cli_warns_with_flags(tmp_path, capsys):
    from safetensors.torch import save_file

    from taugate.api import _write_modes

    model, modes = shifted_modes(rows=300)
    folder = _write_modes(modes, tmp_path / "modes")
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    (tmp_path / "net.py").write_text(
        "import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(16, 64), "
        "torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))\n")
    argv = ["train", "--out", str(tmp_path / "run"), "--modes-dir", str(folder),
            "--model", f"{tmp_path / 'net.py'}:build", "--quiet", "--device", "cpu"]
    assert main([*argv, "--weights", str(tmp_path / "w.safetensors"),
                 "--adapt-min-steps", "0"]) == 0
    out = capsys.readouterr().out
    assert "warning: shift: the adapter took only 2 optimizer steps; train it longer with " \
           "--adapt-min-steps or --adapt-epochs" in out
    assert "adapt_min_steps=" not in out
    row = next(line for line in out.splitlines() if line.startswith("shift "))
    assert "/64 " in row and "x fewer" in row  # units kept and the MAC ratio, user family too


def test_model_without_weights_is_refused(tmp_path, capsys):
    (tmp_path / "net.py").write_text("import torch\n\ndef build():\n    return "
                                     "torch.nn.Sequential(torch.nn.Linear(16, 4))\n")
    factory = f"{tmp_path / 'net.py'}:build"
    rc = main(["train", "--out", str(tmp_path / "run"), "--modes-dir", str(tmp_path),
               "--model", factory, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "no --weights given" in err and "--weights-in-factory" in err, err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"no weights= given.*weights_in_factory=True") as info:
        taugate.train({"a": {"train": ([[0.0] * 16], [0]), "test": ([[0.0] * 16], [0])}},
                      tmp_path / "run", model=factory)
    assert "--" not in str(info.value)
    assert not (tmp_path / "run").exists()
