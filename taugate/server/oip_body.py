"""The Open Inference Protocol's inference body: JSON tensors and the binary tensor data
extension, parsed into an array (:func:`parse_infer`) and answered (:func:`encode_infer`). Pure
functions over bytes; :mod:`taugate.server.oip` serves them.

A body is JSON (``{"id", "parameters", "inputs": [{"name", "shape", "datatype", "data"}],
"outputs": [{"name", "parameters": {"binary_data"}}]}``) or, with the header
``Inference-Header-Content-Length: n``, n bytes of that JSON followed by the raw little-endian
tensors of the inputs whose ``parameters.binary_data_size`` says how many bytes they take.

Protocol: https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md
Binary extension: https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from taugate.server import oip_bytes, strict_json
from taugate.server.messages import HttpResponse, json_bytes

VERSION = "1"  # every model has one version
HEADER_LENGTH = "inference-header-content-length"
_MAX_DATA_DEPTH = 8  # lists in an input's "data" at most (an image batch needs 4)
MAX_RANK = _MAX_DATA_DEPTH  # dimensions of an input's shape at most
# A shape's dimensions multiplied, each zero counted as one: far beyond any body a server
# accepts, and small enough for numpy (a zero-size [2**40, 2**40, 0] would overflow its size)
MAX_SHAPE_PRODUCT = 2 ** 40
_DATATYPES = {"float32": ("FP32", np.dtype("<f4")), "float16": ("FP16", np.dtype("<f2")),
              "float64": ("FP64", np.dtype("<f8")), "uint8": ("UINT8", np.dtype("u1")),
              "int64": ("INT64", np.dtype("<i8"))}


def _echo(value, limit: int = 100) -> str:
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


# -- inference requests --------------------------------------------------------------------------

@dataclass(frozen=True)
class InferRequest:
    """A parsed inference request: the input array (not yet range-checked) and what to answer."""

    x: np.ndarray | dict  # several inputs (a tokens bundle): {name: array}
    id: str | None
    outputs: list  # [(output name, binary?)] in the order to answer
    modes: list | None = None  # the mixed-mode model: each row's mode name


def json_size(body: bytes, header_length) -> int:
    """Bytes of JSON in a body (all of it without the binary extension's header)."""
    try:
        return min(len(body), max(0, int(header_length))) if header_length is not None \
            else len(body)
    except ValueError:
        return len(body)


def _split_body(body: bytes, header_length) -> tuple[dict, memoryview]:
    if header_length is None:
        json_part, binary = body, memoryview(b"")
    else:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 <= n <= len(body):
            raise OipError(400, f"Inference-Header-Content-Length: expected an integer from 0 to "
                                f"the body size {len(body)}, got {_echo(header_length)}")
        json_part, binary = body[:n], memoryview(body)[n:]
    try:
        payload = strict_json.loads(json_part)
    except strict_json.JsonRefused as exc:
        raise OipError(400, f"malformed JSON in the inference request: {exc.detail}") from None
    if not isinstance(payload, dict):
        raise OipError(400, f"inference request: expected a JSON object, got "
                            f"{type(payload).__name__}")
    return payload, binary


def _params(obj: dict, where: str) -> dict:
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise OipError(400, f"{where}.parameters: expected an object, got "
                            f"{type(params).__name__}")
    return params


def _shape(tensor: dict, where: str) -> list:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise OipError(400, f"{where}.shape: expected a list of non-negative integers, got "
                            f"{_echo(shape)}")
    if len(shape) > MAX_RANK:
        raise OipError(400, f"{where}.shape: expected at most {MAX_RANK} dimensions, got "
                            f"{len(shape)}")
    if math.prod(max(d, 1) for d in shape) > MAX_SHAPE_PRODUCT:
        raise OipError(400, f"{where}.shape: {_echo(shape)} is too large: its dimensions "
                            f"multiplied (a zero counted as one) must be at most 2**40")
    return shape


def _tensor_data(tensor: dict, where: str, spec: TensorSpec, shape: list, binary: memoryview,
                 offset: int) -> tuple[np.ndarray, int]:
    """The input's values as an array of ``shape``, and the new offset in the binary part."""
    count = math.prod(shape)
    size = _params(tensor, where).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise OipError(400, f"{where}.parameters.binary_data_size: expected a non-negative "
                                f"integer, got {_echo(size)}")
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


def parse_infer(body: bytes, header_length, spec: TensorSpec | list, outputs: list,
                modes_input: str | None = None) -> InferRequest:
    """Parse an inference body (JSON, or JSON + binary tensors) for a model with the input
    ``spec`` (or several, e.g. a tokens bundle's ``input_ids`` and ``attention_mask``: every one
    required, :attr:`InferRequest.x` then a dict of them by name) and the output names
    ``outputs``; with ``modes_input``, the model also takes that ``BYTES`` input of shape [N],
    one mode name per row (the mixed-mode model), answered in :attr:`InferRequest.modes`.
    Raises :class:`OipError` (400)."""
    specs = {s.name: s for s in ([spec] if isinstance(spec, TensorSpec) else spec)}
    spec = next(iter(specs.values()))
    payload, binary = _split_body(body, header_length)
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise OipError(400, f"id: expected a string, got {type(request_id).__name__}")
    names = [*specs] if modes_input is None else [*specs, modes_input]
    expected = " and ".join(repr(n) for n in names)
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != len(names) or \
            not all(isinstance(t, dict) for t in inputs):
        got = len(inputs) if isinstance(inputs, list) else type(inputs).__name__
        count = "one tensor object" if len(names) == 1 else f"{len(names)} tensor objects"
        raise OipError(400, f"inputs: expected a list holding {count} ({expected}), got {got}")
    values, used = {}, 0
    for tensor in inputs:  # the binary part holds the tensors in the order they are listed
        name = tensor.get("name")
        where = f"input {_echo(name)}"
        if not isinstance(name, str) or name not in names or name in values:
            what = "given twice" if isinstance(name, str) and name in values else \
                "unknown input"
            has = f"one input {spec.name!r}" if len(names) == 1 else f"the inputs {expected}"
            raise OipError(400, f"{where}: {what}; the model has {has}")
        if name in specs:
            want = specs[name].datatype
            if tensor.get("datatype") != want:
                raise OipError(400, f"{where}.datatype: expected {want!r}, got "
                                    f"{_echo(tensor.get('datatype'))}")
            values[name], used = _tensor_data(tensor, where, specs[name],
                                              _shape(tensor, where), binary, used)
        else:
            values[name], used = _modes_data(tensor, where, binary, used)
    if used != len(binary):
        raise OipError(400, f"binary data: {len(binary) - used} bytes after the JSON header "
                            f"belong to no input (check binary_data_size and "
                            f"Inference-Header-Content-Length)")
    binary_default = _params(payload, "request").get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise OipError(400, f"parameters.binary_data_output: expected true or false, got "
                            f"{_echo(binary_default)}")
    x = values[spec.name]
    _same_rows(values, specs)
    modes = None if modes_input is None else values[modes_input]
    if modes is not None and (x.ndim == 0 or len(modes) != x.shape[0]):
        raise OipError(400, f"input {modes_input!r}: {len(modes)} mode names for "
                            f"{x.shape[0] if x.ndim else 0} rows of {spec.name!r}; send one "
                            f"name per row")
    return InferRequest(x if len(specs) == 1 else {n: values[n] for n in specs}, request_id,
                        _requested_outputs(payload, outputs, binary_default), modes)


def _same_rows(values: dict, specs: dict) -> None:
    """Several inputs describe the same rows: their shapes must agree."""
    shapes = {name: list(values[name].shape) for name in specs}
    if len({tuple(s) for s in shapes.values()}) > 1:
        got = ", ".join(f"{n!r} {s}" for n, s in shapes.items())
        raise OipError(400, f"inputs: {got}; expected the same shape for each")


def _modes_data(tensor: dict, where: str, binary: memoryview, offset: int) -> tuple[list, int]:
    """The per-row mode names of the mixed model's ``BYTES`` input [N], and the new offset."""
    if tensor.get("datatype") != "BYTES":
        raise OipError(400, f"{where}.datatype: expected 'BYTES' (one mode name per row), got "
                            f"{_echo(tensor.get('datatype'))}")
    shape = _shape(tensor, where)
    if len(shape) != 1:
        raise OipError(400, f"{where}.shape: expected [N] (one mode name per row), got "
                            f"{_echo(shape)}")
    size = _params(tensor, where).get("binary_data_size")
    try:
        if size is None:
            if "data" not in tensor:
                raise OipError(400, f"{where}: expected data (a list of strings) or "
                                    f"parameters.binary_data_size")
            return oip_bytes.decode_json(tensor["data"], shape, where), offset
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise OipError(400, f"{where}.parameters.binary_data_size: expected a non-negative "
                                f"integer, got {_echo(size)}")
        if "data" in tensor:
            raise OipError(400, f"{where}: has both binary_data_size and data; send one")
        if offset + size > len(binary):
            raise OipError(400, f"{where}: binary_data_size {size} runs past the "
                                f"{len(binary) - offset} bytes of binary data left in the body")
        return oip_bytes.decode_binary(binary[offset:offset + size], shape, where), \
            offset + size
    except oip_bytes.BytesRefused as exc:
        raise OipError(400, str(exc)) from None


def _requested_outputs(payload: dict, names: list, binary_default: bool) -> list:
    requested = payload.get("outputs")
    if requested is None:
        return [(name, binary_default) for name in names]
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise OipError(400, f"outputs: expected a list of objects, got {_echo(requested)}")
    chosen = []  # each output once: every one answered is a copy of the logits
    for out in requested:
        name, params = out.get("name"), _params(out, f"output {_echo(out.get('name'))}")
        if name not in names:
            raise OipError(400, f"outputs: unknown output {_echo(name)}; valid: {names}")
        if any(name == seen for seen, _ in chosen):
            raise OipError(400, f"outputs: {name!r} requested more than once ({len(requested)} "
                                f"requested, the model has {len(names)}: {names}); request "
                                f"each output at most once")
        if params.get("classification"):
            raise OipError(400, f"output {name!r}: the classification extension is not "
                                f"supported; request the logits")
        binary = params.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise OipError(400, f"output {name!r}.parameters.binary_data: expected true or "
                                f"false, got {_echo(binary)}")
        chosen.append((name, binary))
    return chosen


def encode_infer(mode: str, request: InferRequest, results: dict, specs: dict,
                 parameters: dict | None = None):
    """The inference answer: JSON, or JSON + raw tensors when any output is binary
    (``parameters``: the answer's own, if any)."""
    outputs, chunks = [], []
    for name, binary in request.outputs:
        value, spec = results[name], specs[name]
        out = {"name": name, "datatype": spec.datatype, "shape": list(value.shape)}
        if binary:
            raw = np.ascontiguousarray(value, dtype=spec.dtype).tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            out["data"] = value.reshape(-1).tolist()
        outputs.append(out)
    answer = {"model_name": mode, "model_version": VERSION, "outputs": outputs}
    if parameters:
        answer["parameters"] = parameters
    if request.id is not None:
        answer = {"id": request.id, **answer}
    if not chunks:
        return HttpResponse.json(answer)
    header = json_bytes(answer)
    return HttpResponse(200, b"".join([header, *chunks]),
                        {"content-type": "application/octet-stream",
                         HEADER_LENGTH: str(len(header))})
