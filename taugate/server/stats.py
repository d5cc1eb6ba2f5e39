"""Triton's statistics extension: ``GET /v2/models/stats`` and ``GET /v2/models/{m}[/versions/
{v}]/stats``, answered from the handler's counters (:mod:`taugate.server.metrics`), so that
tritonclient's ``get_inference_statistics`` works.

``queue`` is the time requests waited for a batch (0 ns unless dynamic batching is on: ``taugate
serve --batch-delay-ms``); ``execution_count`` counts successful requests and ``batch_stats`` is
empty. Phases: ``compute_input`` parse and validation, ``compute_infer`` the model run,
``compute_output`` encoding the answer. Spec:
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_statistics.md
"""

from __future__ import annotations

from taugate.runtime import DENSE
from taugate.server.messages import HttpResponse, Route
from taugate.server.metrics import ModeCounters
from taugate.server.oip import model_refusal
from taugate.server.oip_body import VERSION


def _duration(count: int, ns: int) -> dict:
    return {"count": count, "ns": ns}


def model_stats(name: str, c: ModeCounters | None) -> dict:
    """One entry of ``model_stats`` for mode ``name`` (zeros before its first request)."""
    c = c or ModeCounters()
    ok = c.success
    return {"name": name, "version": VERSION, "last_inference": c.last_inference_ms,
            "inference_count": c.rows, "execution_count": ok,
            "inference_stats": {
                "success": _duration(ok, c.success_ns), "fail": _duration(c.fail, c.fail_ns),
                "queue": _duration(ok, c.queue_ns), "compute_input": _duration(ok, c.input_ns),
                "compute_infer": _duration(ok, c.infer_ns),
                "compute_output": _duration(ok, c.output_ns),
                "cache_hit": _duration(0, 0), "cache_miss": _duration(0, 0)},
            "batch_stats": [], "memory_usage": []}


class _Stats:
    def __init__(self, handler):
        self.handler = handler

    def all(self, req) -> HttpResponse:
        counters = self.handler.metrics.modes()
        names = [*self.handler.runtime.modes, DENSE]
        return HttpResponse.json({"model_stats": [model_stats(m, counters.get(m))
                                                  for m in names]})

    def one(self, req, mode: str, version: str | None = None) -> HttpResponse:
        refused = model_refusal(self.handler, mode, version)
        if refused is not None:
            return refused
        c = self.handler.metrics.modes().get(mode)
        return HttpResponse.json({"model_stats": [model_stats(mode, c)]})


def routes(handler) -> list:
    """The statistics routes for ``handler`` (before the protocol's ``/v2/models/{m}``)."""
    s = _Stats(handler)
    return [Route("GET", "/v2/models/stats", "oip_stats_all", s.all),
            Route("GET", "/v2/models/{mode}/stats", "oip_stats", s.one),
            Route("GET", "/v2/models/{mode}/versions/{version}/stats", "oip_stats_version",
                  s.one)]
