"""The run half of an inference, after :meth:`ProtocolHandler.route
<taugate.server.protocol.ProtocolHandler.route>`: the ``run`` callables the engines pass, the
rows of mode "auto" (or the mixed model) run concurrently on an awaitable ``run``, and the answer
when a run raises -- the same for both APIs, through :meth:`Inference.error`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Callable

import numpy as np

from taugate.runtime import BundleError, InputError, InvalidOutputError, UnknownModeError
from taugate.runtime.routing import groups
from taugate.server.batcher import QueueFull
from taugate.server.messages import HttpRequest, HttpResponse, Inference, ServiceUnavailable
from taugate.server.metrics import cause_of
from taugate.server.redact import PathRedactor

log = logging.getLogger("taugate.server")

Run = Callable[[str, np.ndarray], np.ndarray]
AsyncRun = Callable[[str, np.ndarray], Awaitable[np.ndarray]]


async def run_rows_async(run: AsyncRun, routed: Inference, classes: int) -> np.ndarray:
    """Mode "auto": one awaited ``run`` per mode present, concurrently; the logits of every row
    (``classes`` per row) in the order of ``routed.x``."""
    parts = groups(routed.rows)
    outs = await asyncio.gather(*(run(m, routed.x[ix]) for m, ix in parts.items()))
    logits = np.empty((routed.x.shape[0], classes), np.float32)
    for ix, out in zip(parts.values(), outs):
        logits[ix] = out
    return logits


def run_failed(inference: Inference, req: HttpRequest, exc: Exception,
               redact: PathRedactor) -> HttpResponse:
    """The answer when ``run`` raised ``exc``: its message without absolute paths."""
    message = redact(str(exc))
    if isinstance(exc, UnknownModeError):
        return inference.error(404, "unknown mode", message)
    if isinstance(exc, InputError):
        return inference.error(422, "invalid input", message)
    if isinstance(exc, QueueFull):
        answer = inference.error(503, "server busy", message)
        answer.headers["retry-after"] = str(exc.retry_after_s)
        return answer
    if isinstance(exc, ServiceUnavailable):
        return inference.error(503, "unavailable", message)
    if isinstance(exc, InvalidOutputError):  # a broken or hostile bundle, not the input
        log.error("%s %s: %s", req.method, req.path, exc)
        return inference.error(500, "invalid model output", message)
    if isinstance(exc, BundleError):  # its file changed or vanished since open
        return inference.error(503, "mode unavailable", message)
    log.error("inference failed on %s %s", req.method, req.path, exc_info=exc)
    kind = "internal error"
    return inference.error(500, kind, f"{kind}: {type(exc).__name__}")


def run_cause(exc: Exception, status: int) -> str:
    """The failure cause of a run that raised ``exc`` (answered with ``status``)."""
    for kind, cause in ((InvalidOutputError, "invalid_output"), (BundleError, "mode_unavailable"),
                        (UnknownModeError, "unknown_model"), (InputError, "invalid_input")):
        if isinstance(exc, kind):
            return cause
    return cause_of(status)
