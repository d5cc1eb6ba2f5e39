"""Malformed manifests (taugate.bundle.safe_json + manifest): every way ends in the documented
hierarchy (BundleError / BundleFormatError / BundleIntegrityError), never a crash or a hang."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from taugate.bundle import manifest as manifest_mod
from taugate.bundle.safe_json import (
    UnsafeInputError,
    json_depth_error,
    loads_strict,
    read_regular_file,
)
from taugate.runtime import BundleError, BundleFormatError, BundleIntegrityError, ModeRuntime


def _copy(tiny_bundle, tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, root)
    return root


def _text(root) -> str:
    return (root / "manifest.json").read_text()


def _write(root, text: str) -> None:
    (root / "manifest.json").write_text(text)


def _replace_version(root, value: str) -> None:
    _write(root, _text(root).replace('"format_version": 2', f'"format_version": {value}', 1))


def _set_file(root, value: str) -> None:
    m = json.loads(_text(root))
    m["modes"]["rot0"]["file"] = value
    _write(root, json.dumps(m))


def _symlink_loop(root) -> None:
    os.symlink("loop_b", root / "modes" / "loop_a")
    os.symlink("loop_a", root / "modes" / "loop_b")
    _set_file(root, "modes/loop_a")


# (case, breakage, error class, message fragment)
MANIFEST_REFUSALS = [
    ("nested-100k", lambda r: _write(r, "[" * 100_000 + "]" * 100_000), BundleFormatError,
     "nested deeper"),
    ("nested-in-a-field", lambda r: _write(r, _text(r).replace(
        '"created_by":', '"deep": ' + "[" * 5000 + "]" * 5000 + ', "created_by":', 1)),
     BundleFormatError, "nested deeper"),
    ("thousand-digit-int", lambda r: _replace_version(r, "1" * 5000), BundleFormatError,
     "5000 characters"),
    ("1e400", lambda r: _replace_version(r, "1e400"), BundleFormatError, "out of the float range"),
    ("NaN", lambda r: _replace_version(r, "NaN"), BundleFormatError, "NaN is not valid JSON"),
    ("duplicate-keys", lambda r: _write(r, _text(r).replace('"format_version": 2',
                                                           '"format_version": 2, "format_version": 2',
                                                           1)),
     BundleFormatError, "duplicate key 'format_version'"),
    ("format-version-1.0", lambda r: _replace_version(r, "1.0"), BundleFormatError,
     "format_version 1.0 is not supported"),
    ("not-utf8", lambda r: (r / "manifest.json").write_bytes(b"\xff\xfe{}"), BundleError,
     "cannot read"),
    ("nul-in-path", lambda r: _set_file(r, "modes/rot0.onnx\0.txt"), BundleIntegrityError,
     "without NUL bytes"),
    ("5000-char-path", lambda r: _set_file(r, "modes/" + "a" * 5000), BundleIntegrityError,
     "at most 1024 characters"),
    ("long-component", lambda r: _set_file(r, "modes/" + "a" * 1000), BundleIntegrityError,
     "rot0"),
    ("symlink-loop", _symlink_loop, BundleIntegrityError, "rot0"),
    ("manifest-symlink-out", lambda r: (
        shutil.move(r / "manifest.json", r.parent / "elsewhere.json"),
        os.symlink(r.parent / "elsewhere.json", r / "manifest.json")),
     BundleError, "symlink"),
    ("manifest-dev-zero", lambda r: ((r / "manifest.json").unlink(),
                                     os.symlink("/dev/zero", r / "manifest.json")),
     BundleError, "symlink"),
    ("manifest-fifo", lambda r: ((r / "manifest.json").unlink(), os.mkfifo(r / "manifest.json")),
     BundleError, "not a regular file"),
    ("manifest-directory", lambda r: ((r / "manifest.json").unlink(),
                                      (r / "manifest.json").mkdir()),
     BundleError, "manifest.json"),
    ("manifest-self-loop", lambda r: ((r / "manifest.json").unlink(),
                                      os.symlink("manifest.json", r / "manifest.json")),
     BundleError, "symlink"),
    ("model-fifo", lambda r: ((r / "modes" / "rot0.onnx").unlink(),
                              os.mkfifo(r / "modes" / "rot0.onnx")),
     BundleIntegrityError, "rot0"),
]


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
@pytest.mark.parametrize("breakage,error,needle", [r[1:] for r in MANIFEST_REFUSALS],
                         ids=[r[0] for r in MANIFEST_REFUSALS])
def test_malformed_bundles_end_in_the_hierarchy(tiny_bundle, tmp_path, breakage, error, needle,
                                                lazy):
    root = _copy(tiny_bundle, tmp_path)
    breakage(root)
    with pytest.raises(error) as info:
        ModeRuntime.open(root, lazy=lazy)
    assert needle in str(info.value)


def test_oversized_manifest_is_refused_without_reading_it_all(tiny_bundle, tmp_path,
                                                              monkeypatch):
    root = _copy(tiny_bundle, tmp_path)
    monkeypatch.setattr(manifest_mod, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(BundleError, match="exceeds the limit of 100 bytes"):
        ModeRuntime.open(root)


@pytest.mark.parametrize("path", ["bun\0dle", "x" * 5000, "/dev/zero", "/dev/null/x"],
                         ids=["nul", "5000-chars", "dev-zero", "under-a-file"])
def test_unusable_bundle_paths(path):
    with pytest.raises(BundleError):
        ModeRuntime.open(path)


# -- the module itself ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,needle", [
    ('{"a": 1, "a": 2}', "duplicate key 'a'"),
    ('{"a": {"b": 1, "b": 1}}', "duplicate key 'b'"),
    ("[" * 65 + "]" * 65, "nested deeper than 64"),
    ("-" + "9" * 101, "102 characters"),
    ("0." + "1" * 200, "202 characters"),
    ("-1e999", "out of the float range"),
    ("Infinity", "Infinity is not valid JSON"),
    ("[1, 2", "Expecting"),
], ids=["dup", "dup-nested", "depth", "long-int", "long-float", "neg-inf", "infinity",
        "truncated"])
def test_loads_strict_refuses(text, needle):
    with pytest.raises(ValueError, match=needle):
        loads_strict(text)


@pytest.mark.parametrize("text,depth", [
    ('["[[[[[", "\\"[[[["]', 1),
    ('{"a": [[{"b": "]]]]]]"}]]}', 4),
    ('"\\\\" ', 0),
    ('["\\\\", [[]]]', 3),
])
def test_depth_scan_skips_strings_and_escapes(text, depth):
    assert json.loads(text) is not None or text
    assert json_depth_error(text, depth) is None
    if depth:
        assert json_depth_error(text, depth - 1) is not None


def test_loads_strict_accepts_what_json_accepts():
    text = json.dumps({"a": [1, 2.5, -3e-7, None, True, "x\\"], "b": {"c": "[[[["}})
    assert loads_strict(text) == json.loads(text)


def test_read_regular_file(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"12345")
    assert read_regular_file(f, 5) == b"12345"
    with pytest.raises(UnsafeInputError, match="exceeds the limit of 4 bytes"):
        read_regular_file(f, 4)
    os.symlink(f, tmp_path / "link")
    with pytest.raises(UnsafeInputError, match="symlink"):
        read_regular_file(tmp_path / "link", 10)
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "missing", 10)
