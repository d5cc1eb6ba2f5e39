"""Triton's model repository extension over the bundle: every mode is a model.

    POST /v2/repository/index                  every model with its state (READY/UNAVAILABLE)
    POST /v2/repository/models/{m}/load        bring mode m into service from the bundle on disk
    POST /v2/repository/models/{m}/unload      take it out (its requests then answer 404)

The index is read-only and always answered. Load and unload change what the server serves, so
they are refused (403) unless the server was started with model control on (``taugate serve
--model-control``, ``create_app(..., model_control=True)``), like Triton's
``--model-control-mode=explicit``. A load re-reads and verifies the manifest and the mode's
files (:mod:`taugate.runtime.repository`); a refused load answers 400 with the reason and changes
nothing. Spec:
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_model_repository.md
"""

from __future__ import annotations

import logging

from taugate.runtime import BundleError, RuntimeConfigError, UnknownModeError
from taugate.server import strict_json
from taugate.server.messages import HttpResponse, Route
from taugate.server.oip_body import VERSION

log = logging.getLogger("taugate.server")

CONTROL_OFF = ("model control is off: this server does not load or unload models (start it "
               "with `taugate serve --model-control` to allow it)")


def _error(status: int, message: str) -> HttpResponse:
    return HttpResponse.json({"error": message}, status)


def _parameters(body: bytes) -> dict | HttpResponse:
    """The request's JSON object (an empty body is ``{}``), or the 400 to answer."""
    if not body.strip():
        return {}
    try:
        payload = strict_json.loads(body)
    except strict_json.JsonRefused as exc:
        return _error(400, f"{exc.error}: {exc.detail}")
    if not isinstance(payload, dict):
        return _error(400, f"expected a JSON object, got {type(payload).__name__}")
    return payload


class _Repository:
    def __init__(self, handler, model_control: bool):
        self.handler = handler
        self.model_control = model_control

    def index(self, req) -> HttpResponse:
        payload = _parameters(req.body)
        if isinstance(payload, HttpResponse):
            return payload
        ready_only = payload.get("ready", False)
        if not isinstance(ready_only, bool):
            return _error(400, f"ready: expected true or false, got {ready_only!r}")
        redact = self.handler.redact
        out = [{"name": e["name"], "version": VERSION, "state": e["state"],
                "reason": redact(e["reason"])}
               for e in self.handler.runtime.repository_index()
               if not ready_only or e["state"] == "READY"]
        return HttpResponse.json(out)

    def _control(self, req, mode: str, action: str) -> HttpResponse:
        if not self.model_control:
            return _error(403, CONTROL_OFF)
        payload = _parameters(req.body)
        if isinstance(payload, HttpResponse):
            return payload
        runtime = self.handler.runtime
        try:
            if action == "load":
                outcome = runtime.load_mode(mode)
            else:
                runtime.unload_mode(mode)
                outcome = "unloaded"
        except UnknownModeError as exc:
            return _error(404, self.handler.redact(str(exc)))
        except (BundleError, RuntimeConfigError) as exc:
            log.warning("%s of mode %r refused: %s", action, mode, exc)
            return _error(400, f"{action} of {mode!r} refused: {self.handler.redact(str(exc))}")
        return HttpResponse.json({"name": mode, "outcome": outcome})

    def load(self, req, mode: str) -> HttpResponse:
        return self._control(req, mode, "load")

    def unload(self, req, mode: str) -> HttpResponse:
        return self._control(req, mode, "unload")


def routes(handler, model_control: bool = False) -> list:
    """The repository routes for ``handler``; load and unload only with ``model_control``."""
    r = _Repository(handler, model_control)
    return [Route("POST", "/v2/repository/index", "oip_repository_index", r.index),
            Route("POST", "/v2/repository/models/{mode}/load", "oip_repository_load", r.load),
            Route("POST", "/v2/repository/models/{mode}/unload", "oip_repository_unload",
                  r.unload)]
