"""Reading untrusted files and JSON with bounds (standard library + numpy).

Used for a bundle's ``manifest.json`` (and its model files) and for request bodies: every way
such input can be malformed ends in a ``ValueError`` subclass naming what was received, never
in a hang, a crash (``RecursionError``) or a silently odd value:

* :func:`read_regular_file`: opens without following a final symlink (``O_NOFOLLOW``) and
  without blocking on a FIFO (``O_NONBLOCK``), checks with ``fstat`` that what was opened is a
  regular file (not a FIFO, a device such as ``/dev/zero``, or a directory), and reads at most
  ``max_bytes``;
* :func:`loads_strict`: JSON with duplicate keys refused, nesting bounded, integers of at most
  :data:`MAX_NUMBER_CHARS` characters, floats finite (``1e400`` parses to inf: refused),
  ``NaN``/``Infinity`` refused, strings that are not Unicode text (a lone ``\\ud800``)
  refused naming the field.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import sys

import numpy as np

MAX_DEPTH = 64
MAX_NUMBER_CHARS = 100


class UnsafeInputError(ValueError):
    """A file or JSON text that :mod:`safe_json` refuses (the message says why)."""


def open_regular(path: str | os.PathLike, follow_links: bool = True):
    """``path`` opened for binary reading, only if it is a regular file: a FIFO, a device or a
    directory (and, with ``follow_links=False``, a symlink as the last path component) is
    :class:`UnsafeInputError`. Never blocks (opened non-blocking, checked with ``fstat`` on the
    open descriptor, so nothing can be swapped in between); OSError (missing file, permission)
    propagates."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if not follow_links and os.path.islink(path):
            raise UnsafeInputError(f"{path}: is a symlink; expected a regular file") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnsafeInputError(f"{path}: not a regular file (mode {stat.filemode(mode)})")
    return os.fdopen(fd, "rb")


def read_regular_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` (at most ``max_bytes``, else UnsafeInputError).

    A symlink as the last path component, a FIFO, a device, a directory or a larger file is
    refused; OSError (missing file, permission) propagates.
    """
    with open_regular(path, follow_links=False) as f:
        fd = f.fileno()
        info = os.fstat(fd)
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


_INTERN_CHARS = 48  # shorter strings are interned: names that repeat in every mode entry


def _interned(value, intern=sys.intern, depth: int = 0):
    """``value`` with its short strings (and those of short nested lists) interned: a manifest
    of 1,000 modes repeats "backbone", "float32", "keep.0", ... in every entry (one copy each
    instead of thousands, megabytes less resident). ``intern``: ``sys.intern``, or a memo of
    the one parse (:func:`_sharing_hook`)."""
    if type(value) is str:
        return intern(value) if len(value) <= _INTERN_CHARS else value
    if type(value) is list and depth < 2 and len(value) <= 8:
        for i, v in enumerate(value):
            if type(v) in (str, list):
                value[i] = _interned(v, intern, depth + 1)
    return value


def _no_duplicates(pairs, intern=sys.intern):
    out = {}
    for key, value in pairs:
        if key in out:
            raise UnsafeInputError(f"duplicate key {key[:80]!r} in a JSON object")
        out[key] = _interned(value, intern)
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


# A whole JSON string (escapes consumed, so an escaped quote does not end it): removed before
# the depth count, since brackets inside strings do not nest.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = np.full(256, -1, np.int8)
_STEP[list(b"[{")] = 1
_CHUNK = 1 << 20


def json_depth_error(text: str | bytes, max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``text`` nests deeper than ``max_depth`` arrays/objects, or None.

    Run before parsing, so no parser recursion is ever spent on a hostile document: strings
    removed, brackets kept (both C-level passes), then the running depth as a prefix sum in
    numpy, a chunk at a time (a 16 MiB header of brackets costs a fraction of a second).
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = 0
    for start in range(0, len(brackets), _CHUNK):
        steps = _STEP[np.frombuffer(brackets, np.uint8, min(_CHUNK, len(brackets) - start),
                                    start)]
        running = np.cumsum(steps, dtype=np.int64) + depth
        if running.max() > max_depth:
            return f"JSON nested deeper than {max_depth} levels"
        depth = int(running[-1])
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _where(path) -> str:
    """``a.b[2].c`` from the linked path ``(((None, "a"), "b"), 2), "c")`` (at most 200
    characters, keeping the end)."""
    keys = []
    while path is not None:
        path, key = path
        keys.append(key)
    out = ""
    for key in reversed(keys):
        out += f"[{key}]" if isinstance(key, int) else (("." if out else "") + ascii(key)[1:-1])
    return (out if len(out) <= 200 else "..." + out[-197:]) or "top level"


def lone_surrogate_error(value) -> str | None:
    """Why ``value`` (parsed JSON) holds a string that is not Unicode text, or None.

    JSON may escape half of a UTF-16 surrogate pair (``"\\ud800"``); Python decodes it to a
    lone surrogate that no UTF-8 encoder accepts, so any later print, log line or JSON answer
    carrying the string fails. The message names the field (keys as a dotted path). Iterative,
    so any nesting depth is fine.
    """
    stack = [(None, value)]  # (linked path, value): no path copied per level
    seen: set = set()  # ids of the lists and objects visited: a shared one is checked once
    while stack:
        path, item = stack.pop()
        if isinstance(item, (dict, list)):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if isinstance(item, str):
            m = _SURROGATE.search(item)
            if m:
                return (f"{_where(path)}: string holds a lone UTF-16 surrogate "
                        f"{ascii(m.group())[1:-1]} (not Unicode text; expected a string that "
                        f"encodes to UTF-8)")
        elif isinstance(item, dict):
            for key, sub in reversed(item.items()):
                stack += [((path, key), sub), ((path, key), key)]
        elif isinstance(item, list):
            stack += [((path, i), sub) for i, sub in reversed(list(enumerate(item)))]
    return None


def loads_strict(text: str | bytes, max_depth: int = MAX_DEPTH, share: bool = False):
    """``json.loads`` that refuses (UnsafeInputError or json.JSONDecodeError, both ValueError)
    duplicate keys, nesting deeper than ``max_depth``, numbers longer than
    :data:`MAX_NUMBER_CHARS` characters, non-finite numbers, NaN/Infinity and strings holding
    a lone surrogate (:func:`lone_surrogate_error`, naming the field).

    ``share``: equal short lists of strings and integers become one object each (a manifest of
    1,000 modes repeats the same ``take``, ``scale`` and ``shape`` lists in every entry). Only
    for a result that is read, never changed in place."""
    error = json_depth_error(text, max_depth)
    if error:
        raise UnsafeInputError(error)
    hook = _sharing_hook({}) if share else _no_duplicates
    try:
        value = json.loads(text, object_pairs_hook=hook, parse_int=_parse_int,
                           parse_float=_parse_float, parse_constant=_parse_constant)
    except RecursionError:  # belt and braces: the scan above should have caught it
        raise UnsafeInputError("JSON nested too deeply") from None
    error = lone_surrogate_error(value)
    if error:
        raise UnsafeInputError(error)
    return value


_SHARED_MAX_ITEMS = 16  # longer lists and objects are never merged (the hashing costs)


def _fingerprint(value, shared: set) -> int | None:
    """The hash of a short list or object whose items are strings, integers (no bools or
    floats: equal must mean the same JSON), nulls, or lists and objects in ``shared`` (ids of
    values the memo keeps alive: an id is never reused while the memo holds it); else None.
    Only the hash is kept in the memo: a key per value would stay allocated until parsing
    ends, between the values that are kept, and leave the heap holed when freed."""
    if len(value) > _SHARED_MAX_ITEMS:
        return None
    parts = []
    for v in (value if type(value) is list else value.values()):
        t = type(v)
        if t is str or t is int or v is None:
            parts.append(v)
        elif (t is list or t is dict) and id(v) in shared:
            parts.append(id(v))  # equal to an integer item at worst: _same tells them apart
        else:
            return None
    if type(value) is list:
        return hash((list, *parts))
    return hash((dict, *value, *parts))


def _same(a, b) -> bool:
    """``a`` and ``b`` (both accepted by :func:`_fingerprint`) are the same JSON: items equal
    and of the same type, shared lists and objects the same object, keys in the same order."""
    if type(a) is not type(b) or len(a) != len(b):
        return False
    if type(a) is dict:
        if list(a) != list(b):
            return False
        a, b = a.values(), b.values()
    return all(x is y or (type(x) is type(y) and type(x) is not list and type(x) is not dict
                          and x == y) for x, y in zip(a, b))


class _Strings(dict):
    """Each string, once: ``strings[s]`` is the first string equal to ``s``."""

    def __missing__(self, s: str) -> str:
        self[s] = s
        return s


def _sharing_hook(memo: dict):
    """``_no_duplicates``, then each short list or object equal to one already parsed (see
    :func:`_fingerprint`) is replaced by that one, as it is parsed: the copy is garbage at once
    (sharing after parsing frees the copies into a fragmented heap that keeps its pages). A
    manifest of 1,000 modes repeats the same materialization steps in most entries."""
    shared: set = set()
    # strings are made one object each by this parse's own memo, freed with it: sys.intern
    # would grow the interpreter's table (never shrunk) by every mode's file names
    intern = _Strings().__getitem__

    def share(v):
        if type(v) is list:
            for i, item in enumerate(v):
                if type(item) is list:
                    v[i] = share(item)
        h = _fingerprint(v, shared)
        if h is None:
            return v
        kept = memo.setdefault(h, v)
        if kept is v:
            shared.add(id(v))
            return v
        return kept if _same(kept, v) else v  # a hash collision: kept apart

    def hook(pairs):
        out = _no_duplicates(pairs, intern)
        for k, v in out.items():
            if type(v) is list:
                out[k] = share(v)
        return share(out)
    return hook
