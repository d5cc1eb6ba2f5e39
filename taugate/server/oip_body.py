"""The Open Inference Protocol's inference body: JSON tensors and the binary tensor data
extension, parsed into an array (:func:`parse_infer`; each tensor is
:mod:`taugate.server.oip_tensors`'s, the mixed model's modes :mod:`taugate.server.oip_modes`')
and answered (:func:`taugate.server.oip_answer.encode_infer`). Pure functions over bytes;
:mod:`taugate.server.oip` serves them.

A body is JSON (``{"id", "parameters", "inputs": [{"name", "shape", "datatype", "data"}],
"outputs": [{"name", "parameters": {"binary_data"}}]}``) or, with the header
``Inference-Header-Content-Length: n``, n bytes of that JSON followed by the raw little-endian
tensors of the inputs whose ``parameters.binary_data_size`` says how many bytes they take.

Protocol: https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md
Binary extension: https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taugate.server import strict_json
from taugate.server.oip_modes import modes_data
from taugate.server.oip_tensors import (
    OipError,
    TensorSpec,
    checked_shape,
    echo,
    parameters_of,
    tensor_data,
)

VERSION = "1"  # every model has one version
HEADER_LENGTH = "inference-header-content-length"


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
                                f"the body size {len(body)}, got {echo(header_length)}")
        json_part, binary = body[:n], memoryview(body)[n:]
    try:
        payload = strict_json.loads(json_part)
    except strict_json.JsonRefused as exc:
        raise OipError(400, f"malformed JSON in the inference request: {exc.detail}") from None
    if not isinstance(payload, dict):
        raise OipError(400, f"inference request: expected a JSON object, got "
                            f"{type(payload).__name__}")
    return payload, binary


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
        where = f"input {echo(name)}"
        if not isinstance(name, str) or name not in names or name in values:
            what = "given twice" if isinstance(name, str) and name in values else \
                "unknown input"
            has = f"one input {spec.name!r}" if len(names) == 1 else f"the inputs {expected}"
            raise OipError(400, f"{where}: {what}; the model has {has}")
        if name in specs:
            want = specs[name].datatype
            if tensor.get("datatype") != want:
                raise OipError(400, f"{where}.datatype: expected {want!r}, got "
                                    f"{echo(tensor.get('datatype'))}")
            values[name], used = tensor_data(tensor, where, specs[name],
                                             checked_shape(tensor, where), binary, used)
        else:
            values[name], used = modes_data(tensor, where, binary, used)
    if used != len(binary):
        raise OipError(400, f"binary data: {len(binary) - used} bytes after the JSON header "
                            f"belong to no input (check binary_data_size and "
                            f"Inference-Header-Content-Length)")
    binary_default = parameters_of(payload, "request").get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise OipError(400, f"parameters.binary_data_output: expected true or false, got "
                            f"{echo(binary_default)}")
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


def _requested_outputs(payload: dict, names: list, binary_default: bool) -> list:
    requested = payload.get("outputs")
    if requested is None:
        return [(name, binary_default) for name in names]
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise OipError(400, f"outputs: expected a list of objects, got {echo(requested)}")
    chosen = []  # each output once: every one answered is a copy of the logits
    for out in requested:
        name, params = out.get("name"), parameters_of(out, f"output {echo(out.get('name'))}")
        if name not in names:
            raise OipError(400, f"outputs: unknown output {echo(name)}; valid: {names}")
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
                                f"false, got {echo(binary)}")
        chosen.append((name, binary))
    return chosen
