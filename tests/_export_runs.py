"""Tiny training runs of every family for the export tests (seeded, a few seconds each): the
paper's mlp on a slice of MNIST, a user model (``--model FILE.py:FACTORY``) on mode folders
made here, and a tiny vit on image mode folders made here."""

from __future__ import annotations

import shutil

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from taugate.cli import main

USER_MODEL = '''
import torch
from torch import nn


class Sensor(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 24)
        self.act = nn.ReLU()
        self.head = nn.Linear(24, 2)

    def forward(self, x):
        return self.head(self.act(self.embed(x)))


def build():
    return Sensor()
'''

MNIST = ["--limit-train", "1500", "--limit-test", "300", "--calibration-size", "300",
         "--hidden", "32,32", "--epochs", "1"]
VIT = ["--family", "vit", "--family-option", "patch=4", "--family-option", "dim=8",
       "--family-option", "heads=2", "--family-option", "depth=1", "--family-option", "ffn=16",
       "--epochs", "2", "--batch-size", "16", "--lr", "0.01", "--optimizer", "adam"]


def _tabular_modes(root, modes, n=240):
    """Mode m: label = the sign of one linear direction, shifted per mode."""
    for i, name in enumerate(modes):
        rng = np.random.default_rng(i)
        (root / name).mkdir(parents=True)
        for split, rows in (("train", n), ("test", n // 2)):
            x = rng.normal(size=(rows, 6)).astype(np.float32)
            y = ((x[:, 0] + x[:, 1] + 0.3 * i) > 0).astype(np.int64)
            np.savez(root / name / f"{split}.npz", x=x, y=y)


def _image_modes(root, modes, n=128):
    """1x8x8 images: label = whether the top half is brighter (by a clear margin)."""
    for i, name in enumerate(modes):
        rng = np.random.default_rng(i)
        (root / name).mkdir(parents=True)
        for split in ("train", "test"):
            y = rng.integers(0, 2, n).astype(np.int64)
            x = rng.uniform(0, 0.5, size=(n, 1, 8, 8)).astype(np.float32)
            x[y == 1, 0, :4] += 0.5
            x[y == 0, 0, 4:] += 0.5
            np.savez(root / name / f"{split}.npz", x=x, y=y)


def _pretrain_user(tmp, modes_dir, modes):
    import importlib.util

    spec = importlib.util.spec_from_file_location("user_model", tmp / "user_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.build()
    parts = [np.load(modes_dir / m / "train.npz") for m in modes]
    x = torch.from_numpy(np.concatenate([p["x"] for p in parts]))
    y = torch.from_numpy(np.concatenate([p["y"] for p in parts]))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    save_file({k: v.numpy() for k, v in model.state_dict().items()}, str(tmp / "user.safetensors"))


def make_run(family: str, tmp, data_root=None, modes=("a", "b", "c")) -> tuple:
    """Train a tiny run of ``family`` ("mlp", "user", "vit") under ``tmp``; returns
    (run directory, mode names)."""
    run = tmp / "run"
    common = ["train", "--out", str(run), "--quiet", "--device", "cpu"]
    if family == "mlp":
        modes = ("rot0", "rot45")
        argv = [*common, "--modes", ",".join(modes), "--data-root", data_root, *MNIST]
    elif family == "user":
        _tabular_modes(tmp / "modes", modes)
        (tmp / "user_model.py").write_text(USER_MODEL)
        _pretrain_user(tmp, tmp / "modes", modes)
        argv = [*common, "--modes-dir", str(tmp / "modes"), "--model",
                f"{tmp / 'user_model.py'}:build", "--weights", str(tmp / "user.safetensors")]
    else:
        _image_modes(tmp / "modes", modes)
        argv = [*common, "--modes-dir", str(tmp / "modes"), *VIT]
    assert main(argv) == 0
    return run, list(modes)


def spoiled_copy(run, mode: str, dest):
    """A copy of ``run`` whose ``mode`` adapter has every gain 0: the mode predicts a constant
    (worse than the dense frozen model), while pruning loses nothing (no unit contributes)."""
    shutil.copytree(run, dest)
    path = dest / "adapters" / f"{mode}.safetensors"
    tensors = load_file(str(path))
    gains = [k for k in tensors if k.endswith(".gain")]
    assert gains, sorted(tensors)
    save_file({k: np.zeros_like(v) if k in gains else v for k, v in tensors.items()}, str(path))
    return dest
