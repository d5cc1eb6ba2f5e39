"""Fuzzing the manifest reader (bounded, deterministic): a valid manifest mutated field by field or
byte by byte either loads or raises a :class:`BundleError` subclass, never another exception."""

from __future__ import annotations

import json
import shutil

import pytest

from taugate.bundle.manifest import load_manifest, parse_manifest
from taugate.runtime import BundleError, ModeRuntime

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Hostile scalars: huge and negative integers, non-finite-adjacent floats, lone surrogates, paths
# that leave the bundle, NUL bytes, bools where numbers belong.
HOSTILE_TEXT = st.one_of(
    st.sampled_from(["\ud800", "x\udfff", "../../etc/passwd", "/abs.onnx", "a\0b", "float32",
                     "batch", "image", "backbone", "mode", "int8", "fp32", "rot0", "dense",
                     "taugate-bundle", "0" * 64, "modes/rot0.onnx", "@taugate/materialized"]),
    st.text(max_size=12))
SCALARS = st.one_of(
    HOSTILE_TEXT,
    st.sampled_from([0, -1, 1, 2 ** 31, 2 ** 63, 2 ** 70, 10 ** 99, 0.5, True, None]),
    st.integers(), st.floats(allow_nan=False, allow_infinity=False),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


@pytest.fixture(scope="module")
def raw(tiny_bundle) -> dict:
    return json.loads((tiny_bundle / "manifest.json").read_text("utf-8"))


def _paths(node, prefix=()):
    """Every (path to a container, key) in ``node``: the places a mutation can hit."""
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, value in items:
        yield prefix, key
        yield from _paths(value, prefix + (key,))


def _mutate(raw: dict, data) -> dict:
    doc = json.loads(json.dumps(raw))  # a deep copy
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        places = list(_paths(doc))
        parent_path, key = data.draw(st.sampled_from(places), label="where")
        parent = doc
        for k in parent_path:
            parent = parent[k]
        action = data.draw(st.sampled_from(["replace", "delete", "add", "rename"]),
                           label="action")
        if action == "delete":
            del parent[key]
        elif action in ("add", "rename") and isinstance(parent, dict):
            value = data.draw(VALUES) if action == "add" else parent.pop(key)
            parent[data.draw(HOSTILE_TEXT, label="new key")] = value
        else:
            parent[key] = data.draw(VALUES, label="value")
    return doc


def _usable(m) -> None:
    """What the server and ``info`` do with a loaded manifest: encode it as UTF-8 JSON."""
    json.dumps(m.raw, ensure_ascii=False).encode("utf-8")
    assert m.input.features >= 1 and m.output.classes >= 1


@FUZZ
@given(data=st.data())
def test_mutated_manifest_fields_parse_or_raise_bundle_errors(raw, data):
    try:
        m = parse_manifest(_mutate(raw, data))
    except BundleError:
        return
    _usable(m)


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory):
    return shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("fuzz") / "bundle")


def _load_or_refuse(root, text: bytes, open_runtime: bool = False) -> None:
    (root / "manifest.json").write_bytes(text)
    try:
        _usable(load_manifest(root)[1])
        if open_runtime:  # path, sha256 and operator checks of every file, no sessions
            ModeRuntime.open(root, lazy=True).close()
    except BundleError:
        pass


@FUZZ
@given(data=st.data())
def test_mutated_manifest_bytes_load_or_raise_bundle_errors(bundle, tiny_bundle, data):
    text = bytearray((tiny_bundle / "manifest.json").read_bytes())
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(text)), label="at")
        kind = data.draw(st.sampled_from(["flip", "insert", "delete"]), label="kind")
        if kind == "insert":
            chunk = data.draw(st.one_of(
                st.binary(max_size=6),
                st.sampled_from([b"[", b"{", b'"\\ud800"', b"9" * 400, b"1e999", b"NaN",
                                 b',"a":1', b'\\u0000', b"\xff\xfe"])), label="chunk")
            text[at:at] = chunk
        elif text and at < len(text):
            if kind == "flip":
                text[at] ^= data.draw(st.integers(1, 255), label="mask")
            else:
                del text[at:at + data.draw(st.integers(1, 8), label="length")]
    _load_or_refuse(bundle, bytes(text), open_runtime=True)


@FUZZ
@given(doc=VALUES)
def test_arbitrary_json_documents_load_or_raise_bundle_errors(bundle, doc):
    _load_or_refuse(bundle, json.dumps(doc).encode())
