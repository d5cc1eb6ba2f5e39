"""A graph file's own initializers, carried into another graph under new names without decoding.

An int8 mode's file holds its weights (quantized tensors, scales, zero points) inside the graph.
``run_mixed``'s one graph (:mod:`mixed_graph`) takes each of them over as it is: every field of
the ``TensorProto`` but its name is copied byte for byte from the verified file, and
:func:`taugate.runtime.onnx_build.model_bytes` writes it under the mode's prefixed name. A
tensor whose data lives outside the file (``data_location`` EXTERNAL, ``external_data``) or in
a segment is not carried: the caller then keeps to one call per mode.
"""

from __future__ import annotations

from taugate.bundle.onnx_wire import fields, parse

_NAME, _SEGMENT, _EXTERNAL, _LOCATION = 8, 3, 13, 14


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if not n:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def tensors_without_names(buf, graph_span: tuple) -> dict | None:
    """name -> the bytes of that initializer's ``TensorProto`` without its name field, for
    every initializer of the ``GraphProto`` at ``buf[graph_span[0]:graph_span[1]]``; None
    when one keeps its data outside the file."""
    out = {}
    for number, wire, value in fields(buf, *graph_span):
        if number != 5 or wire != 2:  # GraphProto.initializer
            continue
        name, body = None, bytearray()
        for n, w, v in fields(buf, *value):
            if n in (_SEGMENT, _EXTERNAL) or (n == _LOCATION and v):
                return None
            if n == _NAME:
                name = bytes(buf[v[0]:v[1]]).decode("utf-8")
                continue
            body += _varint(n << 3 | w)
            if w == 0:
                body += _varint(v)
            elif w == 2:
                body += _varint(v[1] - v[0]) + bytes(buf[v[0]:v[1]])
            else:
                body += bytes(buf[v:v + (8 if w == 1 else 4)])
        if name is None:
            return None
        out[name] = bytes(body)
    return out


def graph_span(buf) -> tuple | None:
    """The span of the ModelProto's graph field (7) in ``buf``."""
    parse(buf, "ModelProto")  # the structure is checked once, here
    for number, wire, value in fields(buf):
        if number == 7 and wire == 2:
            return value
    return None
