"""A safetensors reader on the standard library + numpy (no torch, no safetensors package).

Format (https://huggingface.co/docs/safetensors): 8-byte little-endian header length N, N bytes
of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
then the raw little-endian data. A bundle file is untrusted input: the header size is capped,
every dtype and shape is checked against its byte range, and the byte ranges must tile the data
exactly (sorted, no gap, no overlap, nothing past the end).
"""

from __future__ import annotations

import json

import numpy as np

from taugate.bundle.errors import BundleIntegrityError

MAX_HEADER_BYTES = 16 * 1024 * 1024
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U8": "u1", "BOOL": "?"}


def _fail(where: str, what: str) -> BundleIntegrityError:
    return BundleIntegrityError(f"{where}: not a valid safetensors file: {what}")


def _entry(where: str, name: str, spec, data_len: int) -> tuple[np.dtype, tuple, int, int]:
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise _fail(where, f"tensor {name!r}: expected {{dtype, shape, data_offsets}}, got {spec!r}")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if dtype not in DTYPES:
        raise _fail(where, f"tensor {name!r}: dtype {dtype!r} not supported; valid: "
                           f"{', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _fail(where, f"tensor {name!r}: shape must be a list of non-negative integers, "
                           f"got {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1]
            or offsets[1] > data_len):
        raise _fail(where, f"tensor {name!r}: data_offsets {offsets!r} outside the data "
                           f"(0..{data_len})")
    np_dtype = np.dtype(DTYPES[dtype])
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * np_dtype.itemsize != offsets[1] - offsets[0]:
        raise _fail(where, f"tensor {name!r}: {dtype} {shape} needs {count * np_dtype.itemsize} "
                           f"bytes, data_offsets span {offsets[1] - offsets[0]}")
    return np_dtype, tuple(shape), offsets[0], offsets[1]


def read_safetensors(data: bytes, where: str = "safetensors") -> tuple[dict, dict]:
    """Parse ``data`` (a whole file's bytes); returns (name -> read-only numpy array, metadata).

    Arrays are views of ``data`` (no copy). Raises :class:`BundleIntegrityError` saying what is
    wrong.
    """
    if len(data) < 8:
        raise _fail(where, f"{len(data)} bytes, shorter than the 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES or n > len(data) - 8:
        raise _fail(where, f"header length {n} exceeds the cap {MAX_HEADER_BYTES} or the file "
                           f"({len(data)} bytes)")
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(where, f"header is not UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _fail(where, f"header must be a JSON object, got {type(header).__name__}")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _fail(where, "__metadata__ must map strings to strings")
    body = memoryview(data)[8 + n:]
    parsed = sorted(((_entry(where, k, v, len(body)), k) for k, v in header.items()),
                    key=lambda item: item[0][2:])
    end = 0
    tensors = {}
    for (dtype, shape, begin, stop), name in parsed:
        if begin != end:
            raise _fail(where, f"tensor {name!r} starts at byte {begin}, expected {end} (data "
                               f"ranges must tile the data without gaps or overlaps)")
        arr = np.frombuffer(body[begin:stop], dtype=dtype).reshape(shape)
        arr.flags.writeable = False
        tensors[name] = arr
        end = stop
    if end != len(body):
        raise _fail(where, f"{len(body) - end} bytes after the last tensor")
    return tensors, meta
