"""The manifest reader's field checks: each says where in ``manifest.json`` a value is, what was
expected and what was received (BundleFormatError). Standard library only."""

from __future__ import annotations

import re

from taugate.bundle.errors import BundleFormatError
from taugate.bundle.schema import FileRef

MANIFEST_NAME = "manifest.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def fail(where: str, what: str, got) -> BundleFormatError:
    shown = repr(got)
    shown = shown if len(shown) <= 200 else shown[:197] + "..."
    return BundleFormatError(f"{MANIFEST_NAME}: {where}: expected {what}, got {shown}")


def get_field(d: dict, key: str, where: str, kind, what: str, optional: bool = False):
    if key not in d:
        if optional:
            return None
        raise BundleFormatError(f"{MANIFEST_NAME}: {where}: missing field {key!r}")
    value = d[key]
    if optional and value is None:
        return None
    # bool is an int subclass; a true/false where a number belongs is a schema error.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in as_tuple(kind)):
        raise fail(f"{where}.{key}", what, value)
    return value


def as_tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def is_int(v, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def int_list(d: dict, key: str, where: str) -> list[int]:
    value = get_field(d, key, where, list, "a list of non-negative integers")
    if not all(is_int(v) for v in value):
        raise fail(f"{where}.{key}", "a list of non-negative integers", value)
    return value


def file_ref(name: str, d, where: str) -> FileRef:
    if not isinstance(d, dict):
        raise fail(where, "an object {file, sha256}", d)
    file = get_field(d, "file", where, str, "a relative path inside the bundle")
    sha = get_field(d, "sha256", where, str, "64 lowercase hex characters")
    if not _SHA256.match(sha):
        raise fail(f"{where}.sha256", "64 lowercase hex characters", sha)
    return FileRef(name, file, sha)
