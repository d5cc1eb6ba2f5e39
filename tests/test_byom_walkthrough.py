"""The "bring your own model" walk-through of docs/byom.md, command for command on tiny data: mode
folders of tabular data with negative values (np.savez), a model file with a factory and
safetensors weights, `taugate train --modes-dir --model --weights --targets`, `taugate export`,
`taugate info`, `taugate predict`, then the served bundle; the runtime's logits match the torch
hard-gated model the run describes."""

from __future__ import annotations

import json
from collections import OrderedDict

import httpx
import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from taugate.cli import main
from taugate.runtime import ModeRuntime
from taugate.server import BackgroundServer
from taugate.training.loaded import load_run

SENSOR_MODEL = '''
from collections import OrderedDict
from torch import nn

def build():
    return nn.Sequential(OrderedDict([
        ("embed", nn.Linear(8, 32)), ("act1", nn.ReLU()),
        ("hidden", nn.Linear(32, 32)), ("act2", nn.ReLU()),
        ("classify", nn.Linear(32, 3)),
    ]))
'''


def make_modes(root, n_train=300, n_test=100):
    """docs/byom.md's make_modes.py, smaller: eight readings, three classes, two shifted sites."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 3))
    for site, shift in (("north", -1.0), ("south", 0.5)):
        (root / site).mkdir(parents=True)
        for split, n in (("train", n_train), ("test", n_test)):
            x = (rng.normal(size=(n, 8)) + shift).astype(np.float32)
            y = ((x - shift) @ w).argmax(1).astype(np.int64)
            np.savez(root / site / f"{split}.npz", x=x, y=y)


def pretrain(modes, path):
    """docs/byom.md's pretrain.py, fewer steps: the user's own model, saved as safetensors."""
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict([
        ("embed", nn.Linear(8, 32)), ("act1", nn.ReLU()),
        ("hidden", nn.Linear(32, 32)), ("act2", nn.ReLU()),
        ("classify", nn.Linear(32, 3)),
    ]))
    parts = [np.load(modes / m / "train.npz") for m in ("north", "south")]
    x = torch.from_numpy(np.concatenate([p["x"] for p in parts]))
    y = torch.from_numpy(np.concatenate([p["y"] for p in parts]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    save_file(model.state_dict(), str(path))


def test_walkthrough(tmp_path, capsys):
    modes, run, bundle = tmp_path / "modes", tmp_path / "run", tmp_path / "bundle"
    make_modes(modes)
    (tmp_path / "sensor_model.py").write_text(SENSOR_MODEL)
    pretrain(modes, tmp_path / "sensor.safetensors")

    assert main(["train", "--out", str(run), "--modes-dir", str(modes),
                 "--model", f"{tmp_path / 'sensor_model.py'}:build",
                 "--weights", str(tmp_path / "sensor.safetensors"), "--targets", "embed,hidden",
                 "--quiet", "--device", "cpu"]) == 0
    assert main(["export", str(run), "--out", str(bundle)]) == 0
    capsys.readouterr()
    assert main(["info", str(bundle)]) == 0
    info = capsys.readouterr().out
    assert "north" in info and "south" in info

    x = np.load(modes / "north" / "test.npz")["x"][:16]
    assert (x < 0).any()  # negative inputs pass the runtime's input checks
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(bundle), "--mode", "north", "--json", str(tmp_path / "x.npy")]) == 0
    printed = json.loads(capsys.readouterr().out)
    predicted = np.array([p["logits"] for p in printed["predictions"]], dtype=np.float32)

    runtime = ModeRuntime.open(bundle)
    loaded = load_run(run)
    for mode in ("north", "south"):
        # export prunes the units that never fire on the calibration split: exact there (a test
        # input may fire a pruned unit, and then the graph differs from the hard-gated model)
        xc = loaded.modes[mode].calibration[0].numpy()
        with torch.no_grad():
            reference = loaded.modes[mode].hard_model()(torch.from_numpy(xc)).numpy()
        np.testing.assert_allclose(runtime.run(mode, xc), reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(predicted, runtime.run("north", x), rtol=1e-5, atol=1e-5)

    with BackgroundServer(runtime) as server:
        r = httpx.post(f"{server.url}/modes/south/predict", json={"inputs": x.tolist()}, timeout=30)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["logits"], runtime.run("south", x), rtol=1e-5, atol=1e-5)
