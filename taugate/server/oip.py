"""The Open Inference Protocol v2 REST ("KServe v2", as spoken by Triton, KServe, MLServer) with
the binary tensor data extension, for :class:`taugate.server.protocol.ProtocolHandler`.

Every mode is a model, and so is ``dense``; each has one version, ``"1"``. Endpoints::

    GET  /v2/health/live | /v2/health/ready | /v2        server liveness, readiness, metadata
    GET  /v2/models/{m}[/versions/{v}]                    model metadata (from the manifest)
    GET  /v2/models/{m}[/versions/{v}]/ready              model readiness
    POST /v2/models/{m}[/versions/{v}]/infer              inference

An inference body is JSON (``{"id", "parameters", "inputs": [{"name", "shape", "datatype",
"data"}], "outputs": [{"name", "parameters": {"binary_data"}}]}``) or, with the header
``Inference-Header-Content-Length: n``, n bytes of that JSON followed by the raw little-endian
tensors of the inputs whose ``parameters.binary_data_size`` says how many bytes they take. The
Content-Type is ignored (tritonclient sends none). Outputs are binary when the output asks for
``binary_data`` or the request sets ``parameters.binary_data_output``; the answer then carries the
same header. Errors are ``{"error": "..."}`` with 400 (bad request, refused input), 404 (unknown
model, version or route) or 413 (body over the limit).

Protocol: https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md
Binary extension: https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from taugate import __version__
from taugate.runtime import DENSE, InputError
from taugate.server.messages import HttpResponse, Inference, Route, json_bytes

VERSION = "1"  # every model has one version
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "onnxruntime_onnx"
_DATATYPES = {"float32": ("FP32", np.dtype("<f4")), "float16": ("FP16", np.dtype("<f2")),
              "float64": ("FP64", np.dtype("<f8")), "uint8": ("UINT8", np.dtype("u1")),
              "int64": ("INT64", np.dtype("<i8"))}


class OipError(Exception):
    """A request the protocol refuses: ``status`` and the message of ``{"error": ...}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error(status: int, message: str):
    return HttpResponse.json({"error": message}, status)


# -- metadata (the only place that reads the manifest's tensor specs) ---------------------------

@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # the protocol's name, e.g. "FP32"
    shape: list  # -1 for the batch axis
    dtype: np.dtype  # little-endian numpy dtype of the binary form

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


def _tensor(name: str, dtype: str, shape: list) -> TensorSpec:
    datatype, np_dtype = _DATATYPES[dtype]
    return TensorSpec(name, datatype, [d if isinstance(d, int) else -1 for d in shape], np_dtype)


def input_spec(manifest) -> TensorSpec:
    """The model input as the protocol names it.

    The one adapter over the manifest's input spec: format 1 stores ``features`` of a
    ``[batch, features]`` input; bundle v2 stores a per-sample shape (switch here at merge).
    """
    spec = manifest.input
    shape = getattr(spec, "shape", None) or ["batch", spec.features]
    return _tensor(spec.name, spec.dtype, list(shape))


def output_spec(manifest) -> TensorSpec:
    """The model output (logits ``[batch, classes]``) as the protocol names it."""
    spec = manifest.output
    shape = getattr(spec, "shape", None) or ["batch", spec.classes]
    return _tensor(spec.name, spec.dtype, list(shape))


def server_metadata() -> dict:
    return {"name": "taugate", "version": __version__, "extensions": EXTENSIONS}


def model_metadata(mode: str, manifest) -> dict:
    return {"name": mode, "versions": [VERSION], "platform": PLATFORM,
            "inputs": [input_spec(manifest).metadata()],
            "outputs": [output_spec(manifest).metadata()]}


# -- inference requests --------------------------------------------------------------------------

@dataclass(frozen=True)
class InferRequest:
    """A parsed inference request: the input array (not yet range-checked) and what to answer."""

    x: np.ndarray
    id: str | None
    outputs: list  # [(output name, binary?)] in the order to answer


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
                                f"the body size {len(body)}, got {header_length!r}")
        json_part, binary = body[:n], memoryview(body)[n:]
    try:
        payload = json.loads(json_part)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OipError(400, f"malformed JSON in the inference request: {exc}") from None
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
                            f"{shape!r}")
    return shape


def _tensor_data(tensor: dict, where: str, spec: TensorSpec, shape: list, binary: memoryview,
                 offset: int) -> tuple[np.ndarray, int]:
    """The input's values as an array of ``shape``, and the new offset in the binary part."""
    count = math.prod(shape)
    size = _params(tensor, where).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise OipError(400, f"{where}.parameters.binary_data_size: expected a non-negative "
                                f"integer, got {size!r}")
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
    try:
        values = np.asarray(tensor["data"])
    except (ValueError, TypeError):
        values = None
    if values is None or values.dtype.kind not in "fiu":
        raise OipError(400, f"{where}.data: expected a (possibly nested) list of numbers of "
                            f"datatype {spec.datatype}")
    if values.size != count:
        raise OipError(400, f"{where}: shape {shape} holds {count} values, data has "
                            f"{values.size}")
    return values.astype(spec.dtype, copy=False).reshape(shape), offset


def parse_infer(body: bytes, header_length, spec: TensorSpec, outputs: list) -> InferRequest:
    """Parse an inference body (JSON, or JSON + binary tensors) for a model with one input
    ``spec`` and the output names ``outputs``. Raises :class:`OipError` (400)."""
    payload, binary = _split_body(body, header_length)
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise OipError(400, f"id: expected a string, got {type(request_id).__name__}")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        got = len(inputs) if isinstance(inputs, list) else type(inputs).__name__
        raise OipError(400, f"inputs: expected a list holding one tensor object "
                            f"({spec.name!r}), got {got}")
    tensor = inputs[0]
    where = f"input {tensor.get('name')!r}"
    if tensor.get("name") != spec.name:
        raise OipError(400, f"{where}: unknown input; the model has one input {spec.name!r}")
    if tensor.get("datatype") != spec.datatype:
        raise OipError(400, f"{where}.datatype: expected {spec.datatype!r}, got "
                            f"{tensor.get('datatype')!r}")
    shape = _shape(tensor, where)
    x, used = _tensor_data(tensor, where, spec, shape, binary, 0)
    if used != len(binary):
        raise OipError(400, f"binary data: {len(binary) - used} bytes after the JSON header "
                            f"belong to no input (check binary_data_size and "
                            f"Inference-Header-Content-Length)")
    binary_default = _params(payload, "request").get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise OipError(400, f"parameters.binary_data_output: expected true or false, got "
                            f"{binary_default!r}")
    return InferRequest(x, request_id, _requested_outputs(payload, outputs, binary_default))


def _requested_outputs(payload: dict, names: list, binary_default: bool) -> list:
    requested = payload.get("outputs")
    if requested is None:
        return [(name, binary_default) for name in names]
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise OipError(400, f"outputs: expected a list of objects, got {requested!r}")
    chosen = []
    for out in requested:
        name, params = out.get("name"), _params(out, f"output {out.get('name')!r}")
        if name not in names:
            raise OipError(400, f"outputs: unknown output {name!r}; valid: {names}")
        if params.get("classification"):
            raise OipError(400, f"output {name!r}: the classification extension is not "
                                f"supported; request the logits")
        binary = params.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise OipError(400, f"output {name!r}.parameters.binary_data: expected true or "
                                f"false, got {binary!r}")
        chosen.append((name, binary))
    return chosen


def encode_infer(mode: str, request: InferRequest, results: dict, specs: dict):
    """The inference answer: JSON, or JSON + raw tensors when any output is binary."""
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
    if request.id is not None:
        answer = {"id": request.id, **answer}
    if not chunks:
        return HttpResponse.json(answer)
    header = json_bytes(answer)
    return HttpResponse(200, b"".join([header, *chunks]),
                        {"content-type": "application/octet-stream",
                         HEADER_LENGTH: str(len(header))})


# -- routes --------------------------------------------------------------------------------------

class _Endpoints:
    """The protocol's endpoints over a :class:`ProtocolHandler` (its facts and input check)."""

    def __init__(self, handler):
        self.handler = handler
        manifest = handler.runtime.manifest
        self.input = input_spec(manifest)
        out = output_spec(manifest)
        self.outputs = {out.name: out}

    def _model(self, mode: str, version: str | None):
        if not self.handler.knows(mode):
            valid = ", ".join(repr(m) for m in [*self.handler.runtime.modes[:20], DENSE])
            return error(404, f"unknown model {mode!r}; valid: {valid}")
        if version is not None and version != VERSION:
            return error(404, f"model {mode!r} has no version {version!r}; valid: {VERSION!r}")
        return None

    def live(self, req):
        return HttpResponse.json({"live": True})

    def ready(self, req):
        return HttpResponse.json({"ready": True})

    def server(self, req):
        return HttpResponse.json(server_metadata())

    def model(self, req, mode: str, version: str | None = None):
        return self._model(mode, version) or HttpResponse.json(
            model_metadata(mode, self.handler.runtime.manifest))

    def model_ready(self, req, mode: str, version: str | None = None):
        return self._model(mode, version) or HttpResponse.json(
            {"name": mode, "ready": True})

    def infer(self, req, mode: str, version: str | None = None):
        refused = self._model(mode, version)
        if refused is not None:
            return refused
        try:
            parsed = parse_infer(req.body, req.headers.get(HEADER_LENGTH), self.input,
                                 list(self.outputs))
            x = self.handler.checked_input(parsed.x)
        except OipError as exc:
            return error(exc.status, str(exc))
        except InputError as exc:
            return error(400, str(exc))
        (logits_name,) = self.outputs

        def respond(logits: np.ndarray):
            return encode_infer(mode, parsed, {logits_name: logits}, self.outputs)

        def failed(status: int, kind: str, message: str):
            return error(400 if status == 422 else status, message)  # the protocol has no 422

        return Inference(mode, x, respond, failed)


def routes(handler) -> list:
    """The protocol's routes for ``handler`` (a :class:`ProtocolHandler`)."""
    e = _Endpoints(handler)
    out = [Route("GET", "/v2/health/live", "oip_live", e.live),
           Route("GET", "/v2/health/ready", "oip_ready", e.ready),
           Route("GET", "/v2", "oip_server_metadata", e.server)]
    for prefix, suffix in (("/v2/models/{mode}", ""), ("/v2/models/{mode}", "_version")):
        path = prefix + ("/versions/{version}" if suffix else "")
        out += [Route("GET", path, "oip_model_metadata" + suffix, e.model),
                Route("GET", path + "/ready", "oip_model_ready" + suffix, e.model_ready),
                Route("POST", path + "/infer", "oip_infer" + suffix, e.infer)]
    return out
