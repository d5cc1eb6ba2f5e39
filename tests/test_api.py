"""The Python API: ``taugate.train`` and ``taugate.export`` cover the walk-through (a user's
module, modes as arrays or a folder, both layouts, --into) without taugate's internals."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import taugate
from taugate.runtime import ModeRuntime


def data(shift: float, n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + 2 * (x[:, 2] > 0)
    return x + shift, y


def modes(n=240):
    return {name: {"train": data(shift, n, 1), "test": data(shift, n // 2, 2),
                   "facts": {"shift": shift}}
            for name, shift in (("north", 0.0), ("south", 0.7))}


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32),
                               torch.nn.ReLU(), torch.nn.Linear(32, 4))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    module = model()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    run = taugate.train(modes(), root / "run", model=module, adapt_epochs=2, batch_size=32)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    return root, module, run


def test_train_writes_a_run_of_every_mode(trained):
    root, _, run = trained
    assert sorted(run.adapters) == ["north", "south"]
    assert (root / "run" / "modes" / "south" / "train.npz").is_file()  # reopenable from disk


@pytest.mark.parametrize("layout", ["shared", "standalone"])
def test_export_gives_a_bundle_the_runtime_serves(trained, layout):
    root, _, run = trained
    path = taugate.export(run, root / f"bundle-{layout}", layout=layout, allow_worse=True)
    x, _ = data(0.7, 16, 3)
    with ModeRuntime.open(path) as rt:
        assert sorted(rt.modes) == ["north", "south"]
        assert rt.run("south", x).shape == (16, 4)
        assert rt.manifest.modes["south"].mode_facts["shift"] == 0.7


def test_both_layouts_give_the_same_logits(trained):
    root, _, run = trained
    x, _ = data(0.0, 32, 4)
    paths = [taugate.export(run, root / f"same-{lay}", layout=lay, allow_worse=True)
             for lay in ("shared", "standalone")]
    with ModeRuntime.open(paths[0]) as a, ModeRuntime.open(paths[1]) as b:
        np.testing.assert_array_equal(a.run("north", x), b.run("north", x))


def test_export_into_adds_a_mode(trained):
    root, _, run = trained
    path = taugate.export(run, root / "into", modes=["north"], allow_worse=True)
    taugate.export(run, into=path, modes=["south"], allow_worse=True)
    with ModeRuntime.open(path) as rt:
        assert sorted(rt.modes) == ["north", "south"]


def test_a_run_of_a_python_module_needs_the_module_again(trained):
    root, module, run = trained
    with pytest.raises(ValueError, match="pass it again"):
        taugate.export(run.path, root / "nomodule", allow_worse=True)
    path = taugate.export(run.path, root / "withmodule", model=module, allow_worse=True)
    assert (path / "manifest.json").is_file()
    with pytest.raises(ValueError, match="not this run's foundation"):
        taugate.export(run.path, root / "wrong", model=model().requires_grad_(False).apply(
            lambda m: torch.nn.init.zeros_(m.bias) if isinstance(m, torch.nn.Linear) else None),
            allow_worse=True)


def test_a_factory_and_a_folder(tmp_path):
    factory = tmp_path / "net.py"
    factory.write_text("import torch\n\ndef build():\n    torch.manual_seed(0)\n"
                       "    return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(),"
                       " torch.nn.Linear(16, 4))\n")
    from taugate.api import _write_modes

    folder = _write_modes(modes(120), tmp_path / "MODES")
    run = taugate.train(folder, tmp_path / "run", model=f"{factory}:build",
                        weights_in_factory=True, batch_size=32)
    path = taugate.export(run.path, tmp_path / "bundle", allow_worse=True)  # rebuilt from disk
    with ModeRuntime.open(path) as rt:
        assert rt.predict("north", data(0.0, 5, 5)[0]).shape == (5,)


@pytest.mark.parametrize("bad, error, match", [
    (42, TypeError, "modes: expected a folder, a mapping"),
    ({}, ValueError, "at least one mode"),
    ({"a": {"train": data(0, 10, 1)}}, ValueError, "'train' and 'test'"),
    ({"a": {"train": data(0, 10, 1), "test": data(0, 10, 1), "tset": 1}}, ValueError,
     "unknown keys"),
    ({"a/b": {"train": data(0, 10, 1), "test": data(0, 10, 1)}}, ValueError, "a/b"),
])
def test_bad_modes_are_refused_clearly(tmp_path, bad, error, match):
    with pytest.raises(error, match=match):
        taugate.train(bad, tmp_path / "run", model=model())


def test_export_needs_out_or_into(trained):
    with pytest.raises(ValueError, match="exactly one of out= .* or into="):
        taugate.export(trained[2])


def test_import_taugate_pulls_no_torch():
    code = "import sys, taugate; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
