"""``"auto" | "cpu" | "cuda" | "directml"`` -> ``torch.device``, with clear errors.

auto prefers DirectML (torch-directml, Windows), then CUDA, then CPU. DirectML is reached via
``torch_directml.device()`` (https://learn.microsoft.com/windows/ai/directml/pytorch-windows).
"""

from __future__ import annotations

import importlib.util

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "directml")


def available_devices() -> list[str]:
    """The devices usable here, best first."""
    found = []
    if importlib.util.find_spec("torch_directml") is not None:
        import torch_directml

        if torch_directml.is_available():
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
    if choice not in have:
        raise RuntimeError(
            f"device {name!r} is not available here; available: {', '.join(have)}"
            + (" (install the [directml] extra on Windows)" if name == "directml" else "")
        )
    if choice == "directml":
        import torch_directml

        return torch_directml.device()
    return torch.device(choice)
