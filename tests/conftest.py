"""Shared fixtures: tiny seeded models and bundles built with the real exporter, and a small
subset of the real MNIST (from $TAUGATE_DATA)."""

from __future__ import annotations

import os

import pytest

from taugate.exporting.synthetic import build_random_bundle, random_hardened  # noqa: F401 (re-exported)


def build_tiny_bundle(path, modes=("rot0", "rot45"), seed=0):
    """A valid bundle with random weights: mode i uses seed+1+i; rot0 has plain ReLUs."""
    return build_random_bundle(path, modes=modes, seed=seed)


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


@pytest.fixture(scope="session")
def bert_bundle(tmp_path_factory):
    """Path of a tokens bundle: a tiny BERT from a config, mode "low" (needs transformers;
    about 8 s once per session). Do not modify it."""
    pytest.importorskip("transformers")
    import _hf_models

    return _hf_models.bert_bundle(tmp_path_factory.mktemp("bert"))


@pytest.fixture
def one_torch_thread():
    """Tiny matmuls on a shared machine: one torch thread avoids waiting on a busy second core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
