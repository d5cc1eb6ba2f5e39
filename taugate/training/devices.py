"""``"auto" | "cpu" | "cuda" | "directml"`` -> ``torch.device``, with clear errors.

auto prefers DirectML (torch-directml, Windows), then CUDA, then CPU. DirectML is reached via
``torch_directml.device()`` (https://learn.microsoft.com/windows/ai/directml/pytorch-windows).

torch-directml can be installed where DirectML cannot run: on Linux without WSL's
``libd3d12.so`` its import raises ``OSError``, and elsewhere it may raise other errors. Any
such failure makes DirectML unavailable: ``auto`` falls back (logging why) and
``"directml"`` is an error that names the cause.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

import torch

log = logging.getLogger("taugate.training")

DEVICE_CHOICES = ("auto", "cpu", "cuda", "directml")
_directml_problem: list[str] = []  # why DirectML is unusable here (filled once, then cached)


def directml_problem() -> str | None:
    """Why DirectML cannot be used here, or None when it can."""
    if not _directml_problem:
        _directml_problem.append(_probe_directml())
    return _directml_problem[0] or None


def _probe_directml() -> str:
    if importlib.util.find_spec("torch_directml") is None:
        return "torch-directml is not installed (install the [directml] extra on Windows)"
    try:
        dml = importlib.import_module("torch_directml")
        if dml.is_available():
            return ""
        return "torch-directml is installed but reports no DirectML device"
    except Exception as exc:  # OSError (libd3d12.so), ImportError, RuntimeError...
        return (f"torch-directml is installed but cannot be loaded: {type(exc).__name__}: "
                f"{exc}")


def available_devices() -> list[str]:
    """The devices usable here, best first."""
    found = []
    if directml_problem() is None:
        found.append("directml")
    if torch.cuda.is_available():
        found.append("cuda")
    found.append("cpu")
    return found


def resolve_device(name: str = "auto", available: list[str] | None = None) -> torch.device:
    """The torch device for ``name``; ``available`` overrides detection (tests)."""
    if name not in DEVICE_CHOICES:
        raise ValueError(f"device {name!r}: expected one of {', '.join(DEVICE_CHOICES)}")
    have = available_devices() if available is None else list(available)
    choice = have[0] if name == "auto" else name
    if name == "auto" and available is None and "directml" not in have:
        problem = directml_problem()
        if problem and "not installed" not in problem:
            log.warning("device auto: DirectML is not usable (%s); using %s", problem, choice)
    if choice not in have:
        why = ""
        if name == "directml":
            why = f" ({directml_problem() or 'not detected'})" if available is None else \
                " (install the [directml] extra on Windows)"
        raise RuntimeError(f"device {name!r} is not available here{why}; available: "
                           f"{', '.join(have)}")
    if choice == "directml":
        import torch_directml

        return torch_directml.device()
    return torch.device(choice)
