"""Strict JSON for request bodies, shared by taugate's JSON API and the Open Inference Protocol.

Inputs are numbers only: JSON strings, booleans and null are refused, not converted (numpy would
turn ``"0.5"`` or ``true`` into a float); a body nested too deeply, an integer over Python's
4300-digit limit, or a number beyond the target dtype's range is refused with 400 instead of
crashing a worker (RecursionError, OverflowError) or silently becoming ``inf``.
"""

from __future__ import annotations

import json

import numpy as np

_NUMBERS = {int, float}  # exactly: bool is a subclass of int and is refused


class JsonRefused(Exception):
    """A body or value refused: HTTP ``status``, a short ``error`` kind and the ``detail``."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def loads(body: bytes):
    """``json.loads`` that raises :class:`JsonRefused` (400 "malformed JSON") for anything it
    cannot parse, deep nesting and over-long integers included."""
    try:
        return json.loads(body)
    except RecursionError:
        raise JsonRefused(400, "malformed JSON", "the body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int over 4300 digits
        raise JsonRefused(400, "malformed JSON", str(exc)[:500]) from None


def numbers_only(x, max_depth: int) -> bool:
    """True when ``x`` is a number, or a list of numbers or of such lists at most ``max_depth``
    lists deep."""
    if type(x) in _NUMBERS:
        return True
    if not isinstance(x, list) or max_depth < 1:
        return False
    kinds = set(map(type, x))
    if kinds <= _NUMBERS:
        return True
    return kinds == {list} and all(numbers_only(v, max_depth - 1) for v in x)


def as_array(x, dtype, where: str) -> np.ndarray:
    """``x`` (already :func:`numbers_only`) as an array of ``dtype``; :class:`JsonRefused` 400
    "number out of range" for a value the dtype cannot hold (beyond float32, a huge integer),
    ``ValueError``/``TypeError`` from numpy for ragged lists. An integer ``dtype`` takes JSON
    integers only: ``1.5`` (or ``1.0``) is refused with 400 "invalid input", not truncated."""
    if np.dtype(dtype).kind in "iu":
        probe = np.asarray(x)
        if probe.dtype == object:  # an integer beyond 64 bits
            raise JsonRefused(400, "number out of range",
                              f"{where}: an integer is beyond the {np.dtype(dtype).name} range")
        if probe.size and probe.dtype.kind not in "iu":
            raise JsonRefused(422, "invalid input",
                              f"{where}: expected integers, got numbers with a fraction or "
                              f"exponent (JSON type {probe.dtype.name})")
    try:
        with np.errstate(over="raise", invalid="raise"):
            return np.asarray(x, dtype=dtype)
    except (FloatingPointError, OverflowError):
        raise JsonRefused(400, "number out of range",
                          f"{where}: a number is too long or beyond the "
                          f"{np.dtype(dtype).name} range") from None
