"""The framework-free messages the protocol handler speaks: requests, answers, pending inferences
and routes. FastAPI and Ray Serve convert their own request/response objects to and from these."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class HttpRequest:
    """What the handler needs of a request; ``headers`` looks names up case-insensitively
    (Starlette's ``Headers``) or holds lower-case names (a plain dict)."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


# An answer with one of these statuses closes the connection: the request was not (fully)
# parsed or served (bad or oversized body, timeout, a failure on the server's side), so what
# follows on the connection cannot be trusted to be a request boundary, and a client hammering
# a busy or broken server has to reconnect.
CLOSE_STATUSES = frozenset({400, 408, 413, 500, 503})


@dataclass
class HttpResponse:
    """Status, body and headers (``content-type`` included) of an answer."""

    status: int
    body: bytes
    headers: dict = field(default_factory=dict)

    @classmethod
    def json(cls, obj, status: int = 200, headers: dict | None = None) -> HttpResponse:
        # Starlette's JSONResponse encoding, so that answers do not depend on the engine.
        base = {"content-type": "application/json"}
        if status in CLOSE_STATUSES:
            base["connection"] = "close"
        return cls(status, json_bytes(obj), {**base, **(headers or {})})


def json_bytes(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")


class ServiceUnavailable(Exception):
    """Raised by a ``run`` callable when no model replica can answer right now (503)."""


@dataclass(frozen=True)
class Inference:
    """A validated request waiting for logits: ``run(mode, x)``, then ``respond(logits)``."""

    mode: str
    x: np.ndarray  # float32, already checked by the runtime's input checker
    respond: Callable[[np.ndarray], HttpResponse]
    error: Callable[[int, str, str], HttpResponse]  # (status, kind, message) in this API's form
    rows: list | None = None  # mode "auto": the mode each row runs in (one run per mode)


@dataclass(frozen=True)
class Route:
    """``method template`` (FastAPI's path syntax, e.g. ``/modes/{mode}/predict``) -> target."""

    method: str
    template: str
    name: str
    target: Callable
    inline: bool = False  # cheap, no body: answered on the event loop (health checks)

    def compile(self) -> re.Pattern:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template) + "$")
