"""The one rule for mode names, shared by the exporter and the runtime (standard library only).

A mode name becomes a file name inside a bundle and a URL path segment, so it is kept plain.
"""

from __future__ import annotations

import re

DENSE = "dense"  # reserved: the dense baseline model
AUTO = "auto"  # reserved: each row in the mode its router names (docs/bundle-format.md)
MODE_NAME_RULE = (
    "1-64 ASCII letters, digits, '_', '.', '-', starting with a letter or digit, "
    "and not 'dense' or 'auto'"
)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


_ROTATION_RE = re.compile(r"^rot(-?\d+(?:\.\d+)?)$")


def rotation_angle(name: str) -> float | None:
    """The angle of an MNIST rotation mode name (``"rot45"`` -> 45.0); None for other names."""
    m = _ROTATION_RE.match(name) if isinstance(name, str) else None
    return float(m.group(1)) if m else None


def mode_title(name: str) -> str:
    """How figures title a mode: ``"45°"`` for a rotation, else the mode's name."""
    angle = rotation_angle(name)
    return f"{angle:g}°" if angle is not None else name


def mode_name_error(name: object) -> str | None:
    """Why ``name`` is not a valid mode name, or None when it is."""
    if not isinstance(name, str):
        return f"mode name: expected a string, got {type(name).__name__}"
    if name in (DENSE, AUTO) or not _NAME_RE.fullmatch(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        return f"mode name {shown!r}: expected {MODE_NAME_RULE}"
    return None


def check_mode_name(name: object) -> str:
    """Return ``name`` if it is a valid mode name, else raise ValueError saying why."""
    error = mode_name_error(name)
    if error is not None:
        raise ValueError(error)
    return name  # type: ignore[return-value]
