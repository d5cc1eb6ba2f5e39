"""The protocol's ``BYTES`` tensors, as the mixed-mode model's per-row ``mode`` input uses them:
JSON strings, or the binary extension's form (each element a 4-byte little-endian length, then
that many bytes). Elements are UTF-8 text here (mode names). Pure functions over bytes.

Binary form: https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
"""

from __future__ import annotations

import math

MAX_ELEMENT_BYTES = 1024  # far above any mode name (64 characters); refused past it


class BytesRefused(ValueError):
    """A ``BYTES`` tensor that cannot be read: the message says what and where."""


def _text(raw: bytes, where: str, i: int) -> str:
    if len(raw) > MAX_ELEMENT_BYTES:
        raise BytesRefused(f"{where}[{i}]: {len(raw)} bytes, expected at most "
                           f"{MAX_ELEMENT_BYTES} (a mode name)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BytesRefused(f"{where}[{i}]: expected UTF-8 text (a mode name), got "
                           f"{raw[:40]!r}") from None


def decode_binary(data: memoryview, shape: list, where: str) -> list:
    """The ``prod(shape)`` strings of a binary ``BYTES`` tensor filling ``data`` exactly."""
    count, out, at = math.prod(shape), [], 0
    for i in range(count):
        if at + 4 > len(data):
            raise BytesRefused(f"{where}: binary data ends after {i} of the {count} elements of "
                               f"shape {shape} (each: a 4-byte little-endian length, then the "
                               f"bytes)")
        size = int.from_bytes(data[at:at + 4], "little")
        at += 4
        if at + size > len(data):
            raise BytesRefused(f"{where}[{i}]: length {size} runs past the {len(data) - at} "
                               f"bytes left of its binary_data_size")
        out.append(_text(bytes(data[at:at + size]), where, i))
        at += size
    if at != len(data):
        raise BytesRefused(f"{where}: {len(data) - at} bytes after its {count} elements (shape "
                           f"{shape}); check binary_data_size")
    return out


def decode_json(data, shape: list, where: str) -> list:
    """The ``prod(shape)`` strings of a JSON ``BYTES`` tensor (a flat list of strings)."""
    count = math.prod(shape)
    if not isinstance(data, list) or not all(isinstance(s, str) for s in data):
        raise BytesRefused(f"{where}.data: expected a flat list of strings (one mode name per "
                           f"row), got {type(data).__name__}"
                           + ("" if not isinstance(data, list) else " holding other values"))
    if len(data) != count:
        raise BytesRefused(f"{where}: shape {shape} holds {count} values, data has {len(data)}")
    for i, s in enumerate(data):
        _text(s.encode("utf-8", "surrogatepass"), where, i)
    return data
