"""taugate's JSON API (``/health``, ``/modes``, ``/modes/{mode}``, ``/modes/{mode}/predict``)
for :class:`taugate.server.protocol.ProtocolHandler`: its endpoints, the strict parsing of a
predict body and its ``{"error", "detail"}`` answers. The Open Inference Protocol beside it is
:mod:`taugate.server.oip`'s.
"""

from __future__ import annotations

import numpy as np

from taugate.runtime import DENSE, InputError, UnknownModeError
from taugate.runtime.routing import AUTO, UnknownInputError
from taugate.server import strict_json, token_body
from taugate.server.messages import HttpRequest, HttpResponse, Inference, Route
from taugate.server.schemas import ModeInfo

_MODE_INFO_FIELDS = tuple(ModeInfo.model_fields)


def taugate_error(status: int, error: str, detail) -> HttpResponse:
    return HttpResponse.json({"error": error, "detail": detail}, status)


_BadRequest = strict_json.JsonRefused


def parse_predict_body(body: bytes, max_depth: int = 3, tokens: bool = False):
    """``{"inputs": [...]}`` -> the inputs as a float32 array (shape checks are the runtime's).
    Strict: numbers only, at most ``max_depth`` lists deep (the handler passes one more than the
    rank of a sample of the bundle's input, e.g. 3 for a batch of 28x28 images). ``tokens``:
    the bundle takes token ids (:func:`token_body.parse_token_inputs`: int64, or a dict)."""
    payload = strict_json.loads(body)
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise _BadRequest(422, "invalid request body",
                          'expected a JSON object {"inputs": [sample, ...]}' + (
                              ' or {"inputs": {"input_ids": [[...]], "attention_mask": '
                              '[[...]]}}' if tokens else ""))
    inputs = payload["inputs"]
    if tokens:
        return token_body.parse_token_inputs(inputs)
    if not isinstance(inputs, list):
        raise _BadRequest(422, "invalid request body",
                          f"inputs: expected a list of samples, got {type(inputs).__name__}")
    if not strict_json.numbers_only(inputs, max_depth=max_depth):
        raise _BadRequest(422, "invalid input",
                          f"inputs: expected lists of JSON numbers only (no strings, booleans "
                          f"or null), at most {max_depth} lists deep, each sample shaped as the "
                          f"bundle's input")
    try:
        return strict_json.as_array(inputs, np.float32, "inputs")
    except (ValueError, TypeError):
        raise _BadRequest(422, "invalid input",
                          "inputs: expected equal-length (nested) lists of numbers, each sample "
                          "shaped as the bundle's input") from None


class _Endpoints:
    """The JSON API's endpoints over a :class:`ProtocolHandler` (its facts and input check)."""

    def __init__(self, handler):
        self.handler = handler
        spec = handler.runtime.manifest.input
        # a batch of samples; image inputs may also come as [N, H, W] or [N, C, H, W] lists
        self._json_depth = max(len(spec.shape) + 1, 4 if spec.layout is not None else 0)
        self._tokens = token_body.is_tokens(spec)

    def _info(self, mode: str) -> dict:
        info = self.handler.runtime.info(mode)
        return {k: info.get(k) for k in _MODE_INFO_FIELDS}

    def health(self, req: HttpRequest) -> HttpResponse:
        # cheap (a stat per mode file): mounted on the event loop, so it answers while every
        # inference thread is busy
        rt = self.handler.runtime
        down = self.handler.redact.values(rt.unavailable())
        return HttpResponse.json({"status": "degraded" if down else "ok", "modes": len(rt.modes),
                                  "providers": rt.providers, "unavailable": down})

    def modes(self, req: HttpRequest) -> HttpResponse:
        return HttpResponse.json({"modes": [self._info(m) for m in self.handler.runtime.modes],
                                  "dense": self._info(DENSE)})

    def mode_info(self, req: HttpRequest, mode: str) -> HttpResponse:
        try:
            return HttpResponse.json(self._info(mode))
        except UnknownModeError as exc:
            return taugate_error(404, "unknown mode", str(exc))

    def predict(self, req: HttpRequest, mode: str) -> HttpResponse | Inference:
        handler = self.handler
        try:
            x = parse_predict_body(req.body, self._json_depth, self._tokens)
            if not handler.knows(mode):
                handler.runtime.info(mode)  # raises UnknownModeError with the valid choices
            x = handler.checked_input(x)
            routed, rows = handler.auto_rows(x) if mode == AUTO else (None, None)
        except _BadRequest as exc:
            return taugate_error(exc.status, exc.error, exc.detail)
        except UnknownModeError as exc:
            return taugate_error(404, "unknown mode", str(exc))
        except UnknownInputError as exc:
            return taugate_error(422, "unknown input", str(exc))
        except InputError as exc:
            return taugate_error(422, "invalid input", str(exc))

        def respond(logits: np.ndarray) -> HttpResponse:
            answer = {"mode": mode, "classes": logits.argmax(axis=1).tolist(),
                      "logits": logits.tolist()}
            if routed is not None:
                answer["modes"] = routed  # per row: its routed mode, or "unknown" (ran dense)
            return HttpResponse.json(answer)

        return Inference(mode, x, respond, taugate_error, rows)


def routes(handler) -> list:
    """taugate's JSON API routes for ``handler`` (a :class:`ProtocolHandler`); ``GET /health``
    answers on the event loop."""
    e = _Endpoints(handler)
    return [Route("GET", "/health", "health", e.health, inline=True),
            Route("GET", "/modes", "modes", e.modes),
            Route("GET", "/modes/{mode}", "mode_info", e.mode_info),
            Route("POST", "/modes/{mode}/predict", "predict", e.predict)]
