"""One input tensor of an Open Inference Protocol inference body: its spec (name, datatype,
shape), the checks on the shape a client sends, and its values from JSON ``data`` or the binary
tensor data extension's bytes; :class:`OipError` is the refusal of any part of a body. Pure
functions; :mod:`taugate.server.oip_body` reads the whole body with them.

Binary extension: https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from taugate.server import strict_json

_MAX_DATA_DEPTH = 8  # lists in an input's "data" at most (an image batch needs 4)
MAX_RANK = _MAX_DATA_DEPTH  # dimensions of an input's shape at most
# A shape's dimensions multiplied, each zero counted as one: far beyond any body a server
# accepts, and small enough for numpy (a zero-size [2**40, 2**40, 0] would overflow its size)
MAX_SHAPE_PRODUCT = 2 ** 40
_DATATYPES = {"float32": ("FP32", np.dtype("<f4")), "float16": ("FP16", np.dtype("<f2")),
              "float64": ("FP64", np.dtype("<f8")), "uint8": ("UINT8", np.dtype("u1")),
              "int64": ("INT64", np.dtype("<i8"))}


def echo(value, limit: int = 100) -> str:
    """``repr(value)`` cut to ``limit`` characters: error messages quote the client's values."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


class OipError(Exception):
    """A request the protocol refuses: ``status`` and the message of ``{"error": ...}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # the protocol's name, e.g. "FP32"
    shape: list  # -1 for the batch axis
    dtype: np.dtype  # little-endian numpy dtype of the binary form

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


def tensor_spec(name: str, dtype: str, shape: list) -> TensorSpec:
    datatype, np_dtype = _DATATYPES[dtype]
    return TensorSpec(name, datatype, [d if isinstance(d, int) else -1 for d in shape], np_dtype)


def parameters_of(obj: dict, where: str) -> dict:
    """``obj``'s ``parameters`` (an empty dict when absent); ``where`` names ``obj`` in errors."""
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise OipError(400, f"{where}.parameters: expected an object, got "
                            f"{type(params).__name__}")
    return params


def checked_shape(tensor: dict, where: str) -> list:
    """The tensor's ``shape`` as the client sent it, refused unless non-negative integers within
    :data:`MAX_RANK` dimensions and :data:`MAX_SHAPE_PRODUCT` values."""
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise OipError(400, f"{where}.shape: expected a list of non-negative integers, got "
                            f"{echo(shape)}")
    if len(shape) > MAX_RANK:
        raise OipError(400, f"{where}.shape: expected at most {MAX_RANK} dimensions, got "
                            f"{len(shape)}")
    if math.prod(max(d, 1) for d in shape) > MAX_SHAPE_PRODUCT:
        raise OipError(400, f"{where}.shape: {echo(shape)} is too large: its dimensions "
                            f"multiplied (a zero counted as one) must be at most 2**40")
    return shape


def tensor_data(tensor: dict, where: str, spec: TensorSpec, shape: list, binary: memoryview,
                 offset: int) -> tuple[np.ndarray, int]:
    """The input's values as an array of ``shape``, and the new offset in the binary part."""
    count = math.prod(shape)
    size = parameters_of(tensor, where).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise OipError(400, f"{where}.parameters.binary_data_size: expected a non-negative "
                                f"integer, got {echo(size)}")
        if "data" in tensor:
            raise OipError(400, f"{where}: has both binary_data_size and data; send one")
        expected = count * spec.dtype.itemsize
        if size != expected:
            raise OipError(400, f"{where}: binary_data_size {size} does not match shape {shape} "
                                f"of {spec.datatype} ({expected} bytes)")
        if offset + size > len(binary):
            raise OipError(400, f"{where}: binary_data_size {size} runs past the "
                                f"{len(binary) - offset} bytes of binary data left in the body")
        x = np.frombuffer(binary[offset:offset + size], dtype=spec.dtype)
        if not x.flags.aligned:  # the JSON header may end at any byte
            x = x.copy()
        return x.reshape(shape), offset + size
    if "data" not in tensor:
        raise OipError(400, f"{where}: expected data (a list of numbers) or "
                            f"parameters.binary_data_size")
    data = tensor["data"]
    expected = (f"{where}.data: expected a (possibly nested) list of numbers (JSON numbers "
                f"only, no strings, booleans or null) of datatype {spec.datatype}")
    # strict: numbers only, nested flat or as deep as the shape (bounded: the shape is the
    # client's, and the check recurses)
    depth = max(1, min(len(shape), _MAX_DATA_DEPTH))
    if not isinstance(data, list) or not strict_json.numbers_only(data, depth):
        raise OipError(400, expected)
    try:
        values = strict_json.as_array(data, spec.dtype, f"{where}.data")
    except strict_json.JsonRefused as exc:
        raise OipError(400, exc.detail) from None
    except (ValueError, TypeError):  # ragged lists
        raise OipError(400, expected) from None
    if values.size != count:
        raise OipError(400, f"{where}: shape {shape} holds {count} values, data has "
                            f"{values.size}")
    return values.reshape(shape), offset
