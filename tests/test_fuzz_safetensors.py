"""Fuzzing the safetensors reader (bounded, deterministic): mutated headers and mutated bytes of
a valid file either read (arrays consistent with their byte ranges) or raise
:class:`BundleIntegrityError`, never another exception."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taugate.bundle.errors import BundleIntegrityError
from taugate.bundle.safetensors import read_safetensors
from taugate.bundle.safetensors_write import safetensors_bytes

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

VALID = safetensors_bytes({"w": np.arange(12, dtype=np.float32).reshape(3, 4),
                           "b": np.array([1, 5], np.int16), "m": np.array([7], np.uint8)},
                          {"source": "fuzz"})
HEADER_LEN = int.from_bytes(VALID[:8], "little")
HEADER = json.loads(VALID[8:8 + HEADER_LEN])
BODY = VALID[8 + HEADER_LEN:]

NUMBERS = st.one_of(st.integers(-2, 64), st.sampled_from([2 ** 31, 2 ** 32, 2 ** 62, 2 ** 63,
                                                          2 ** 64, 2 ** 70, 10 ** 99]))
SCALARS = st.one_of(NUMBERS, st.sampled_from(["F32", "I16", "U8", "BOOL", "C64", "\ud800", "",
                                              None, True, 1.5]), st.text(max_size=6))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=10)


def _pack(header_text: bytes, body: bytes) -> bytes:
    return len(header_text).to_bytes(8, "little") + header_text + body


def _read_or_refuse(data: bytes) -> None:
    try:
        tensors, meta = read_safetensors(data, "fuzz.safetensors")
    except BundleIntegrityError as exc:
        assert "fuzz.safetensors" in str(exc)
        str(exc).encode("utf-8")  # printable anywhere
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    assert sum(a.nbytes for a in tensors.values()) == len(data) - 8 - int.from_bytes(
        data[:8], "little")


@FUZZ
@given(data=st.data())
def test_mutated_headers_read_or_refuse(data):
    header = json.loads(json.dumps(HEADER))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        name = data.draw(st.sampled_from(sorted(header)), label="tensor")
        field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra", "whole"]),
                          label="field")
        if field == "whole" or not isinstance(header[name], dict):
            header[name] = data.draw(VALUES, label="value")
        elif field == "shape" and data.draw(st.booleans(), label="list of numbers"):
            header[name]["shape"] = data.draw(st.lists(NUMBERS, max_size=70), label="shape")
        elif field == "data_offsets" and data.draw(st.booleans(), label="two numbers"):
            header[name]["data_offsets"] = data.draw(st.lists(NUMBERS, min_size=2, max_size=2))
        else:
            header[name][field] = data.draw(VALUES, label="value")
    text = json.dumps(header).encode()
    if data.draw(st.booleans(), label="duplicate a name"):
        first = sorted(k for k in header if k != "__metadata__")[0]
        text = text[:-1] + b", " + json.dumps(first).encode() + b": " \
            + json.dumps(HEADER[first]).encode() + b"}"
    _read_or_refuse(_pack(text, data.draw(st.sampled_from([BODY, BODY[:-1], BODY + b"\0"]))))


@FUZZ
@given(data=st.data())
def test_mutated_bytes_read_or_refuse(data):
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(raw)), label="at")
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "length"]), label="kind")
        if kind == "length":  # the 8-byte header length itself
            raw[:8] = data.draw(st.integers(0, 2 ** 64 - 1)).to_bytes(8, "little")
        elif kind == "insert":
            raw[at:at] = data.draw(st.one_of(st.binary(max_size=6), st.sampled_from(
                [b"[", b"{", b'"\\ud800"', b"9" * 400, b"-1", b"1e999", b"\xff"])))
        elif at < len(raw):
            if kind == "flip":
                raw[at] ^= data.draw(st.integers(1, 255), label="mask")
            else:
                del raw[at:at + data.draw(st.integers(1, 8), label="length")]
    _read_or_refuse(bytes(raw))


@FUZZ
@given(header=VALUES, body=st.binary(max_size=64))
def test_arbitrary_headers_read_or_refuse(header, body):
    _read_or_refuse(_pack(json.dumps(header).encode(), body))
