"""Write a small ONNX model as protobuf bytes (standard library + numpy: the runtime never
imports onnx). Used by :mod:`taugate.runtime.shared_layer` to run the rest of a mode's graph
after the shared first layer and by :mod:`taugate.runtime.mixed_graph`. Only what those
graphs need: nodes with int, float and ints attributes, float32 and int64 initializers (raw
data), initializers carried from a file (:mod:`file_tensors`), float32 inputs and outputs with
a free batch axis, int64 row-number inputs.
"""

from __future__ import annotations

import struct

import numpy as np

SENTINEL = "@taugate/materialized"  # never a file: the data comes with the session options


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _int(field: int, n: int) -> bytes:
    return _key(field, 0) + _varint(n)


def _bytes(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _str(field: int, s: str) -> bytes:
    return _bytes(field, s.encode("utf-8"))


def _attribute(name: str, value) -> bytes:
    if isinstance(value, (list, tuple)):  # INTS (7): ints 8
        return _str(1, name) + b"".join(_int(8, int(v)) for v in value) + _int(20, 7)
    if isinstance(value, float):  # AttributeProto: name 1, f 2, i 3, type 20 (FLOAT 1, INT 2)
        return _str(1, name) + _key(2, 5) + struct.pack("<f", value) + _int(20, 1)
    return _str(1, name) + _int(3, int(value)) + _int(20, 2)


def _node(op: str, inputs, outputs, attrs: dict) -> bytes:
    body = b"".join(_str(1, i) for i in inputs) + b"".join(_str(2, o) for o in outputs)
    body += _str(4, op) + b"".join(_bytes(5, _attribute(k, v)) for k, v in attrs.items())
    return body


def _tensor(name: str, arr: np.ndarray) -> bytes:
    kind = 7 if arr.dtype.kind in "iu" else 1  # TensorProto INT64 or FLOAT
    arr = np.ascontiguousarray(arr, dtype=np.int64 if kind == 7 else np.float32)
    dims = b"".join(_int(1, d) for d in arr.shape)
    return dims + _int(2, kind) + _str(8, name) + _bytes(9, arr.tobytes())


def _external(name: str, arr: np.ndarray) -> bytes:
    """A float32 initializer whose data the session gets from ``add_external_initializers``
    (the materialized arrays, used in place): the bundles' own sentinel location."""
    dims = b"".join(_int(1, d) for d in arr.shape)
    entry = _bytes(13, _str(1, "location") + _str(2, SENTINEL))
    return dims + _int(2, 1) + _str(8, name) + entry + _int(14, 1)  # data_location EXTERNAL


def _value_info(name: str, width: int | None, elem: int = 1) -> bytes:
    shape = b""  # an output's shape is left to onnxruntime's inference
    if width is not None:
        # a 1-D int64 input (width 0) gets its own free length: each mode's rows differ
        dims = (_bytes(1, _str(2, "batch")) + _bytes(1, _int(1, width)) if width
                else _bytes(1, _str(2, f"{name}_length")))
        shape = _bytes(2, dims)
    tensor_type = _bytes(1, _int(1, elem) + shape)  # elem_type FLOAT (1) or INT64 (7)
    return _str(1, name) + _bytes(2, tensor_type)


def model_bytes(nodes, inputs: dict, outputs: list, initializers: dict, opsets: list,
                int_inputs=(), external=None, carried=None) -> bytes:
    """A ModelProto: ``nodes`` as (op, inputs, output, attrs); ``inputs`` name -> width;
    ``outputs`` names; ``initializers`` name -> float32 or integer array; ``opsets`` (domain,
    version); ``int_inputs``: names of int64 inputs of shape [length] (row numbers);
    ``external``: name -> float32 array declared without its data, for the caller to pass to
    the session (``create_session(..., initializers=external)``) so no copy is made;
    ``carried``: name -> a ``TensorProto``'s bytes without its name (:mod:`file_tensors`).
    A node's output may be a list (several outputs)."""
    graph = b"".join(_bytes(1, _node(op, ins, out if isinstance(out, list) else [out], at))
                     for op, ins, out, at in nodes)
    graph += _str(2, "taugate_rest")
    graph += b"".join(_bytes(5, _tensor(k, v)) for k, v in initializers.items())
    graph += b"".join(_bytes(5, _external(k, v)) for k, v in (external or {}).items())
    graph += b"".join(_bytes(5, body + _str(8, k)) for k, body in (carried or {}).items())
    graph += b"".join(_bytes(11, _value_info(k, w)) for k, w in inputs.items())
    graph += b"".join(_bytes(11, _value_info(k, 0, 7)) for k in int_inputs)
    graph += b"".join(_bytes(12, _value_info(o, None)) for o in outputs)
    model = _int(1, 8)  # ir_version 8 (onnxruntime >= 1.14)
    model += b"".join(_bytes(8, (_str(1, d) if d else b"") + _int(2, v)) for d, v in opsets)
    return model + _bytes(7, graph)
