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


@pytest.fixture
def broken_directml(monkeypatch):
    """torch-directml installed where DirectML cannot load (Linux without libd3d12.so)."""
    import importlib
    import importlib.util

    from taugate.training import devices

    real_find, real_import = importlib.util.find_spec, importlib.import_module

    def find_spec(name, *a, **k):
        return object() if name == "torch_directml" else real_find(name, *a, **k)

    def import_module(name, *a, **k):
        if name == "torch_directml":
            raise OSError("libd3d12.so: cannot open shared object file: No such file or directory")
        return real_import(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(importlib, "import_module", import_module)
    monkeypatch.setattr(devices, "_directml_problem", [])


def test_auto_falls_back_when_directml_is_installed_but_unusable(broken_directml, caplog,
                                                                 monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level("WARNING", logger="taugate.training"):
        assert resolve_device("auto") == torch.device("cpu")
    assert "DirectML is not usable" in caplog.text and "libd3d12.so" in caplog.text


def test_directml_there_is_an_error_naming_the_cause(broken_directml):
    with pytest.raises(RuntimeError, match=r"device 'directml' is not available here \(torch-"
                                           r"directml is installed but cannot be loaded: "
                                           r"OSError: libd3d12.so"):
        resolve_device("directml")


def test_real_torch_directml_install_if_present():
    """Runs where torch-directml is really installed (the compat leg, make test-compat)."""
    import importlib.util

    if importlib.util.find_spec("torch_directml") is None:
        pytest.skip("torch-directml is not installed here")
    device = resolve_device("auto")
    assert device.type in ("cpu", "cuda", "privateuseone")
    assert torch.zeros(2, device=device).sum().item() == 0
