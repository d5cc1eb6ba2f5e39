"""Reading untrusted files and JSON with bounds (standard library only).

Used for a bundle's ``manifest.json`` (and its model files) and for request bodies: every way
such input can be malformed ends in a ``ValueError`` subclass naming what was received, never
in a hang, a crash (``RecursionError``) or a silently odd value:

* :func:`read_regular_file`: opens without following a final symlink (``O_NOFOLLOW``) and
  without blocking on a FIFO (``O_NONBLOCK``), checks with ``fstat`` that what was opened is a
  regular file (not a FIFO, a device such as ``/dev/zero``, or a directory), and reads at most
  ``max_bytes``;
* :func:`loads_strict`: JSON with duplicate keys refused, nesting bounded, integers of at most
  :data:`MAX_NUMBER_CHARS` characters, floats finite (``1e400`` parses to inf: refused),
  ``NaN``/``Infinity`` refused.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat

MAX_DEPTH = 64
MAX_NUMBER_CHARS = 100


class UnsafeInputError(ValueError):
    """A file or JSON text that :mod:`safe_json` refuses (the message says why)."""


def read_regular_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` (at most ``max_bytes``, else UnsafeInputError).

    A symlink as the last path component, a FIFO, a device, a directory or a larger file is
    refused; OSError (missing file, permission) propagates.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
        | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if os.path.islink(path):
            raise UnsafeInputError(f"{path}: is a symlink; expected a regular file") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeInputError(f"{path}: not a regular file (mode {stat.filemode(info.st_mode)})")
        if info.st_size > max_bytes:
            raise UnsafeInputError(f"{path}: {info.st_size} bytes exceeds the limit of "
                                   f"{max_bytes} bytes")
        chunks, total = [], 0
        while True:  # read to EOF, not to st_size: the file may grow while we read
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise UnsafeInputError(f"{path}: more than {max_bytes} bytes (the limit)")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise UnsafeInputError(f"duplicate key {key[:80]!r} in a JSON object")
        out[key] = value
    return out


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise UnsafeInputError(f"number of {len(text)} characters (limit {MAX_NUMBER_CHARS}): "
                               f"{text[:20]}...")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise UnsafeInputError(f"number of {len(text)} characters (limit {MAX_NUMBER_CHARS}): "
                               f"{text[:20]}...")
    value = float(text)
    if not math.isfinite(value):
        raise UnsafeInputError(f"number {text!r} is out of the float range")
    return value


def _parse_constant(text: str):
    raise UnsafeInputError(f"{text} is not valid JSON (only finite numbers are accepted)")


# A backslash escape (consumed whole, so an escaped quote does not end a string), a quote, a
# bracket or a brace: the only characters that decide nesting depth.
_TOKENS = re.compile(rb'\\.|["\[\]{}]', re.DOTALL)


def json_depth_error(text: str | bytes, max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``text`` nests deeper than ``max_depth`` arrays/objects, or None.

    One regex pass over the structural characters (string contents skipped), run before
    parsing, so no parser recursion is ever spent on a hostile document.
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth, in_string = 0, False
    for m in _TOKENS.finditer(data):
        c = data[m.start()]
        if c == 0x5C:  # an escape pair
            continue
        if c == 0x22:
            in_string = not in_string
        elif in_string:
            continue
        elif c in (0x5B, 0x7B):
            depth += 1
            if depth > max_depth:
                return f"JSON nested deeper than {max_depth} levels"
        else:
            depth -= 1
    return None


def loads_strict(text: str | bytes, max_depth: int = MAX_DEPTH):
    """``json.loads`` that refuses (UnsafeInputError or json.JSONDecodeError, both ValueError)
    duplicate keys, nesting deeper than ``max_depth``, numbers longer than
    :data:`MAX_NUMBER_CHARS` characters, non-finite numbers and NaN/Infinity."""
    error = json_depth_error(text, max_depth)
    if error:
        raise UnsafeInputError(error)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_int=_parse_int,
                          parse_float=_parse_float, parse_constant=_parse_constant)
    except RecursionError:  # belt and braces: the scan above should have caught it
        raise UnsafeInputError("JSON nested too deeply") from None
