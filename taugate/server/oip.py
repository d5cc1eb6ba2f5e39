"""The Open Inference Protocol v2 REST ("KServe v2", as spoken by Triton, KServe, MLServer) with
the binary tensor data extension, for :class:`taugate.server.protocol.ProtocolHandler`.

Every mode is a model, and so is ``dense`` (and ``auto`` with a router); each has one version,
``"1"``. The model ``mixed`` takes a second input, ``mode`` (BYTES [N]): row i runs in the mode
it names (docs/runtime.md, "Several modes in one call"). Endpoints::

    GET  /v2/health/live | /v2/health/ready | /v2        server liveness, readiness, metadata
    GET  /v2/models/{m}[/versions/{v}]                    model metadata (from the manifest)
    GET  /v2/models/{m}[/versions/{v}]/ready              model readiness
    POST /v2/models/{m}[/versions/{v}]/infer              inference

The inference body (JSON tensors or the binary tensor extension) is
:mod:`taugate.server.oip_body`'s, the answer :mod:`taugate.server.oip_answer`'s; the
Content-Type is ignored (tritonclient sends none). Outputs are binary when the output asks for
``binary_data`` or the request sets ``parameters.binary_data_output``; the answer then carries the
same header. Errors are ``{"error": "..."}`` with 400 (bad request, refused input), 404 (unknown
model, version or route), 408 (body too slow), 413 (body over the limit), 500 (invalid model
output, a bug) or 503 (mode file changed or vanished, too many requests in flight); 400, 408,
413, 500 and 503 close the connection. The health endpoints are answered on the event loop.

Protocol: https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md
Binary extension: https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
"""

from __future__ import annotations

import numpy as np

from taugate import __version__
from taugate.runtime import DENSE, InputError
from taugate.runtime.routing import AUTO
from taugate.server import token_body
from taugate.server.messages import HttpResponse, Inference, Route
from taugate.server.oip_answer import encode_infer
from taugate.server.oip_body import HEADER_LENGTH, VERSION, json_size, parse_infer
from taugate.server.oip_tensors import OipError, TensorSpec, tensor_spec

__all__ = ["HEADER_LENGTH", "MIXED", "MODE_INPUT", "VERSION", "input_specs", "json_size",
           "model_metadata", "model_refusal", "routes",
           "server_metadata"]

EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "onnxruntime_onnx"
# The mixed-mode model: the rows plus a BYTES input [N] naming each row's mode (served unless the
# bundle has a mode of that name, which keeps it)
MIXED = "mixed"
MODE_INPUT = "mode"
MODE_INPUT_SPEC = {"name": MODE_INPUT, "datatype": "BYTES", "shape": [-1]}


def error(status: int, message: str) -> HttpResponse:
    return HttpResponse.json({"error": message}, status)


# -- metadata (the only place that reads the manifest's tensor specs) ---------------------------

def _with_batch(shape) -> list:
    """``shape`` with a leading batch axis: kept when the first entry names it (a string or
    None, as the manifests write ``"batch"``), else -1 is prepended (a per-sample shape)."""
    shape = list(shape)
    return shape if shape and not isinstance(shape[0], int) else [-1, *shape]


def input_spec(manifest) -> TensorSpec:
    """The model input as the protocol names it.

    The one adapter over the manifest's input spec: format 1 parses ``[batch, features]`` into
    ``features``; bundle v2 keeps a shape (with or without the batch axis: both work here).
    """
    spec = manifest.input
    shape = getattr(spec, "shape", None) or [spec.features]
    return tensor_spec(spec.name, spec.dtype, _with_batch(shape))


def input_specs(manifest) -> list[TensorSpec]:
    """The model's inputs: :func:`input_spec`, or for a tokens bundle (a ``{"kind": "tokens"}``
    layout) two INT64 tensors ``[-1, length]``, ``input_ids`` and ``attention_mask``."""
    if not token_body.is_tokens(manifest.input):
        return [input_spec(manifest)]
    length = manifest.input.layout["length"]
    return [tensor_spec(name, "int64", [-1, length]) for name in token_body.FIELDS]


def output_spec(manifest) -> TensorSpec:
    """The model output (logits ``[batch, classes]``) as the protocol names it."""
    spec = manifest.output
    shape = getattr(spec, "shape", None) or [spec.classes]
    return tensor_spec(spec.name, spec.dtype, _with_batch(shape))


def server_metadata() -> dict:
    return {"name": "taugate", "version": __version__, "extensions": EXTENSIONS}


def is_mixed(mode: str, manifest) -> bool:
    """Whether ``mode`` names the mixed-mode model (and not a mode of the bundle)."""
    return mode == MIXED and MIXED not in manifest.modes


def model_metadata(mode: str, manifest) -> dict:
    extra = [MODE_INPUT_SPEC] if is_mixed(mode, manifest) else []
    return {"name": mode, "versions": [VERSION], "platform": PLATFORM,
            "inputs": [*(s.metadata() for s in input_specs(manifest)), *extra],
            "outputs": [output_spec(manifest).metadata()]}


def mixed_rows(modes: list, manifest) -> list:
    """The mixed model's per-row mode names, each a mode of the bundle or ``dense``; an
    :class:`OipError` (400) names the first other one, its row and the valid names."""
    valid = set(manifest.modes) | {DENSE}
    for name in dict.fromkeys(modes):
        if name not in valid:
            row = modes.index(name)
            names = ", ".join(repr(m) for m in [*list(manifest.modes)[:20], DENSE])
            raise OipError(400, f"input {MODE_INPUT!r}[{row}]: unknown mode "
                                f"{name[:80]!r}; valid: {names}")
    return modes


def model_refusal(handler, mode: str, version: str | None) -> HttpResponse | None:
    """The 404 for a model (mode) or version ``handler`` does not serve, else None."""
    if not handler.knows(mode) and not is_mixed(mode, handler.runtime.manifest):
        valid = ", ".join(repr(m) for m in [*handler.runtime.modes[:20], DENSE])
        return error(404, f"unknown model {mode!r}; valid: {valid}")
    if version is not None and version != VERSION:
        return error(404, f"model {mode!r} has no version {version!r}; valid: {VERSION!r}")
    return None


# -- routes --------------------------------------------------------------------------------------

class _Endpoints:
    """The protocol's endpoints over a :class:`ProtocolHandler` (its facts and input check)."""

    def __init__(self, handler):
        self.handler = handler
        manifest = handler.runtime.manifest
        self.inputs = input_specs(manifest)
        out = output_spec(manifest)
        self.outputs = {out.name: out}

    def _model(self, mode: str, version: str | None):
        return model_refusal(self.handler, mode, version)

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
        refused = self._model(mode, version)
        if refused is not None:
            return refused
        # the protocol: 200 means ready, a 4xx status not ready (here: its file changed or
        # vanished since the bundle was opened, so it would answer 503)
        reason = self.handler.runtime.unavailable().get(mode)
        if reason is not None:
            return HttpResponse.json({"name": mode, "ready": False,
                                      "error": self.handler.redact(reason)}, 400)
        return HttpResponse.json({"name": mode, "ready": True})

    def infer(self, req, mode: str, version: str | None = None):
        refused = self._model(mode, version)
        if refused is not None:
            return refused
        mixed = is_mixed(mode, self.handler.runtime.manifest)
        try:
            parsed = parse_infer(req.body, req.headers.get(HEADER_LENGTH), self.inputs,
                                 list(self.outputs), MODE_INPUT if mixed else None)
            rows = mixed_rows(parsed.modes, self.handler.runtime.manifest) if mixed else None
            x = self.handler.checked_input(parsed.x)
            routed, rows = self.handler.auto_rows(x) if mode == AUTO else (None, rows)
        except OipError as exc:
            return error(exc.status, str(exc))
        except InputError as exc:  # UnknownInputError included
            return error(400, str(exc))
        (logits_name,) = self.outputs
        # mode "auto": each row's routed mode (or "unknown") in the answer's parameters
        extra = None if routed is None else {"taugate_modes": routed}

        def respond(logits: np.ndarray):
            return encode_infer(mode, parsed, {logits_name: logits}, self.outputs, extra)

        def failed(status: int, kind: str, message: str):
            return error(400 if status == 422 else status, message)  # the protocol has no 422

        return Inference(mode, x, respond, failed, rows)


def routes(handler) -> list:
    """The protocol's routes for ``handler`` (a :class:`ProtocolHandler`)."""
    e = _Endpoints(handler)
    out = [Route("GET", "/v2/health/live", "oip_live", e.live, inline=True),
           Route("GET", "/v2/health/ready", "oip_ready", e.ready, inline=True),
           Route("GET", "/v2", "oip_server_metadata", e.server, inline=True)]
    for prefix, suffix in (("/v2/models/{mode}", ""), ("/v2/models/{mode}", "_version")):
        path = prefix + ("/versions/{version}" if suffix else "")
        out += [Route("GET", path, "oip_model_metadata" + suffix, e.model),
                Route("GET", path + "/ready", "oip_model_ready" + suffix, e.model_ready),
                Route("POST", path + "/infer", "oip_infer" + suffix, e.infer)]
    return out
