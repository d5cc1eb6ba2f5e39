"""The stdlib + numpy safetensors reader (taugate.bundle.safetensors) and its writer twin."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taugate.bundle.errors import BundleIntegrityError
from taugate.bundle.safetensors import MAX_HEADER_BYTES, read_safetensors
from taugate.bundle.safetensors_write import safetensors_bytes

TENSORS = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "i": np.array([1, 5], np.int16),
           "m": np.array([0xA0], np.uint8), "l": np.array([7], np.int64),
           "scalar": np.array(2.5, np.float32)}


def test_round_trip_keeps_dtype_shape_values_and_alignment():
    data = safetensors_bytes(TENSORS, {"k": "v"})
    got, meta = read_safetensors(data)
    assert meta == {"k": "v"} and set(got) == set(TENSORS)
    for name, arr in TENSORS.items():
        assert got[name].dtype == arr.dtype and got[name].shape == arr.shape
        np.testing.assert_array_equal(got[name], arr)
        assert got[name].flags.aligned and not got[name].flags.writeable


def test_reads_files_of_the_safetensors_package():
    numpy_api = pytest.importorskip("safetensors.numpy")
    got, _ = read_safetensors(numpy_api.save(TENSORS))
    for name, arr in TENSORS.items():
        np.testing.assert_array_equal(got[name], arr)


def _file(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
BAD = [
    ("short", b"\x01\x00", "shorter than"),
    ("header-cap", (MAX_HEADER_BYTES + 1).to_bytes(8, "little") + b"{}", "exceeds the cap"),
    ("not-json", _file({}, b"")[:8] + b"{" + b"", "exceeds"),
    ("dtype", _file({"a": {**F32, "dtype": "C64"}}, bytes(8)), "dtype 'C64'"),
    ("size", _file({"a": {**F32, "shape": [3]}}, bytes(8)), "needs 12 bytes"),
    ("past-end", _file({"a": {**F32, "data_offsets": [0, 16]}}, bytes(8)), "outside the data"),
    ("gap", _file({"a": {**F32, "data_offsets": [4, 12]}}, bytes(12)), "starts at byte 4"),
    ("overlap", _file({"a": F32, "b": {**F32, "data_offsets": [4, 12]}}, bytes(12)),
     "starts at byte 4"),
    ("trailing", _file({"a": F32}, bytes(12)), "4 bytes after"),
    ("keys", _file({"a": {**F32, "evil": 1}}, bytes(8)), "expected {dtype, shape"),
    ("neg-shape", _file({"a": {**F32, "shape": [-2]}}, bytes(8)), "non-negative"),
]


@pytest.mark.parametrize("data,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_refuses_malformed_files(data, needle):
    with pytest.raises(BundleIntegrityError, match="not a valid safetensors file") as info:
        read_safetensors(data, "modes/x.safetensors")
    assert needle in str(info.value) and "modes/x.safetensors" in str(info.value)
