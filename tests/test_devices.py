"""Device choice: auto prefers DirectML, then CUDA, then CPU; unavailable devices are errors."""

from __future__ import annotations

import pytest
import torch

from taugate.training.devices import resolve_device


@pytest.mark.parametrize(
    "available, expected",
    [(["cuda", "cpu"], "cuda"), (["cpu"], "cpu")],
)
def test_auto_prefers_the_best(available, expected):
    assert resolve_device("auto", available) == torch.device(expected)


def test_auto_prefers_directml(monkeypatch):
    import sys
    import types

    fake = types.SimpleNamespace(device=lambda: "privateuseone:0", is_available=lambda: True)
    monkeypatch.setitem(sys.modules, "torch_directml", fake)
    assert resolve_device("auto", ["directml", "cuda", "cpu"]) == "privateuseone:0"


@pytest.mark.parametrize("name", ["cuda", "directml"])
def test_unavailable_device_names_the_available(name):
    with pytest.raises(RuntimeError, match="available: cpu"):
        resolve_device(name, ["cpu"])


def test_unknown_device():
    with pytest.raises(ValueError, match="expected one of auto, cpu, cuda, directml"):
        resolve_device("tpu", ["cpu"])
