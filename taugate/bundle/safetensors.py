"""A safetensors reader on the standard library + numpy (no torch, no safetensors package).

Format (https://huggingface.co/docs/safetensors): 8-byte little-endian header length N, N bytes
of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
then the raw little-endian data. A bundle file is untrusted input: the header size is capped,
every dtype and shape is checked against its byte range, and the byte ranges must tile the data
exactly (sorted, no gap, no overlap, nothing past the end). The header is read with
:func:`~taugate.bundle.safe_json.loads_strict` (bounded nesting and numbers, no duplicate
tensor names, no lone surrogates), so every malformed file ends in
:class:`~taugate.bundle.errors.BundleIntegrityError`.
"""

from __future__ import annotations

import math

import numpy as np

from taugate.bundle.errors import BundleIntegrityError
from taugate.bundle.safe_json import loads_strict

MAX_HEADER_BYTES = 16 * 1024 * 1024
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U8": "u1", "BOOL": "?"}
MAX_RANK = 32  # numpy's own limit is 64; no weight has more than a handful of axes
# numpy refuses an array whose nonzero dims times the item size pass int64, even when empty
_MAX_NBYTES = 2 ** 63 - 1


def _fail(where: str, what: str) -> BundleIntegrityError:
    return BundleIntegrityError(f"{where}: not a valid safetensors file: {what}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _entry(where: str, name: str, spec, data_len: int) -> tuple[np.dtype, tuple, int, int]:
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise _fail(where, f"tensor {_short(name)}: expected {{dtype, shape, data_offsets}}, got "
                           f"{_short(spec)}")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _fail(where, f"tensor {_short(name)}: dtype {_short(dtype)} not supported; valid: "
                           f"{', '.join(DTYPES)}")
    if not isinstance(shape, list) or len(shape) > MAX_RANK \
            or not all(type(d) is int and d >= 0 for d in shape):
        raise _fail(where, f"tensor {_short(name)}: shape must be a list of at most {MAX_RANK} "
                           f"non-negative integers, got {_short(shape)}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1]
            or offsets[1] > data_len):
        raise _fail(where, f"tensor {_short(name)}: data_offsets {_short(offsets)} outside the data "
                           f"(0..{data_len})")
    np_dtype = np.dtype(DTYPES[dtype])
    if math.prod(d for d in shape if d) * np_dtype.itemsize > _MAX_NBYTES:
        raise _fail(where, f"tensor {_short(name)}: shape {_short(shape)} is too large for an array "
                           f"(more than 2**63 bytes)")
    count = math.prod(shape)  # Python ints: no silent int64 wrap-around
    if count * np_dtype.itemsize != offsets[1] - offsets[0]:
        raise _fail(where, f"tensor {_short(name)}: {dtype} {shape} needs {count * np_dtype.itemsize} "
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
        # duplicate tensor names are refused here, not silently last-wins
        header = loads_strict(bytes(data[8:8 + n]).decode("utf-8"))
    except ValueError as exc:  # not UTF-8, invalid JSON, or refused by loads_strict
        raise _fail(where, f"header is not strict UTF-8 JSON ({exc})") from None
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
            raise _fail(where, f"tensor {_short(name)} starts at byte {begin}, expected {end} (data "
                               f"ranges must tile the data without gaps or overlaps)")
        arr = np.frombuffer(body[begin:stop], dtype=dtype).reshape(shape)
        arr.flags.writeable = False
        tensors[name] = arr
        end = stop
    if end != len(body):
        raise _fail(where, f"{len(body) - end} bytes after the last tensor")
    return tensors, meta
