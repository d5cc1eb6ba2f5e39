"""Shared fixtures: tiny seeded models and bundles built with the real exporter, and a small
subset of the real MNIST (from $TAUGATE_DATA)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from taugate.export.bundle import ModeExport, write_bundle
from taugate.export.hardened import HardenedLayer, HardenedModel


def random_hardened(seed: int, widths=(32, 16), n_in=784, n_out=10, thresholds=True) -> HardenedModel:
    """A seeded random hardened MLP; hidden thresholds are drawn in [0, 0.5) when asked."""
    rng = np.random.default_rng(seed)
    dims = (n_in, *widths, n_out)
    layers = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        w = (rng.standard_normal((b, a)) / np.sqrt(a)).astype(np.float32)
        bias = (0.1 * rng.standard_normal(b)).astype(np.float32)
        t = None
        if i < len(widths):
            t = (rng.random(b) * 0.5).astype(np.float32) if thresholds else np.zeros(b, np.float32)
        layers.append(HardenedLayer(w, bias, t))
    return HardenedModel(tuple(layers))


def build_tiny_bundle(path, modes=("rot0", "rot45"), seed=0):
    """A valid bundle with random weights: mode i uses seed+1+i; rot0 has plain ReLUs."""
    dense = random_hardened(seed, thresholds=False)
    exports = {}
    for i, name in enumerate(modes):
        m = random_hardened(seed + 1 + i, thresholds=(i % 2 == 1))
        exports[name] = ModeExport(
            model=m, method="taugate", angle=float(name[3:]) if name.startswith("rot") else 0.0,
            units_total=m.widths, kept_indices=[list(range(w)) for w in m.widths],
            calibration_accuracy=0.5, test_accuracy=0.5,
        )
    return write_bundle(path, dense, exports)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """Path of a valid two-mode bundle (rot0, rot45) with random weights. Do not modify it:
    copy it first (shutil.copytree) to break it."""
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture(scope="session")
def data_root():
    root = os.environ.get("TAUGATE_DATA")
    if not root or not os.path.isdir(os.path.join(root, "MNIST", "raw")):
        pytest.skip("real MNIST not found: set TAUGATE_DATA to a folder holding MNIST/raw/")
    return root
