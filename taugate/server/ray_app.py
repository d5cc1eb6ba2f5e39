"""taugate on Ray Serve: per-mode sessions multiplexed over a pool of replicas (the ``ray`` extra).

Two deployments:

* ``TaugateIngress`` receives every HTTP request (route prefix ``/``) and hands it to the same
  :class:`~taugate.server.protocol.ProtocolHandler` as ``taugate serve``: parsing, validation
  (the runtime's input checker, on a lazily opened runtime that loads no session) and the
  answers are the single-process server's. For an inference it calls the model deployment's
  handle with ``.options(multiplexed_model_id=mode)``: the mode comes from the URL
  (``/v2/models/{mode}/infer``, ``/modes/{mode}/predict``), and Ray routes each mode to a replica
  that already has it loaded (Ray's HTTP proxy alone would only read the model id from a
  ``serve_multiplexed_model_id`` header).
* ``TaugateModel`` replicas hold a :class:`~taugate.runtime.ModeRuntime` (lazy, at most K sessions,
  one intra-op thread); the per-mode session loader is ``@serve.multiplexed(
  max_num_models_per_replica=K)``, so Ray evicts the least recently used mode past K. With
  ``batch_delay_ms`` > 0 a replica coalesces the requests it receives, of any modes, into
  mixed-mode runs: taugate's :class:`~taugate.server.batcher.Batcher` (``batcher="taugate"``,
  queue bound answered 503) or Ray Serve's ``@serve.batch`` (``batcher="serve"``, for
  comparison); the replica then accepts ``max_queue`` requests at once so that batches can form.

``build_app(RayServeConfig(...))`` returns the Serve application; ``app_builder`` is the same for
``serve run taugate.server.ray_app:app_builder bundle=/shared/bundle replicas=4`` and Serve config
files. Ray Serve docs: https://docs.ray.io/en/latest/serve/model-multiplexing.html
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from dataclasses import asdict, dataclass, fields

try:
    import ray
    from ray import serve
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"taugate's Ray engine needs Ray Serve ({exc.name} is missing): "
                      f"pip install 'taugate[ray]'") from exc
import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from taugate.bundle.manifest import load_manifest
from taugate.runtime import ModeRuntime
from taugate.runtime.routing import check_policy
from taugate.server.app import DEFAULT_MAX_BODY_BYTES
from taugate.server.batcher import Batcher, BatchPolicy
from taugate.server.json_api import taugate_error
from taugate.server.limits import content_length
from taugate.server.messages import HttpRequest, HttpResponse, ServiceUnavailable
from taugate.server.protocol import ProtocolHandler
from taugate.server.ray_posture import LOOPBACK, init_loopback, replica_grpc_on_loopback

log = logging.getLogger("taugate.server")

APP_NAME = "taugate"
REPLICA_HEADER = "x-taugate-replica"  # which model replica answered, and what it holds
# Ray passes objects up to this size inside its RPC messages instead of through the shared-memory
# object store: a batch of 64 images (200 KB) over the default 100 KB went through the store and
# cost ~1.4x the requests/s (measured: 57 vs 79 req/s, binary tensors, batch 64, 1 replica). On a
# cluster, set the same through the environment of every node: RAY_max_direct_call_object_size.
RAY_SYSTEM_CONFIG = {"max_direct_call_object_size": DEFAULT_MAX_BODY_BYTES}
INLINE_JSON_BYTES = 64 * 1024  # the ingress parses smaller JSON bodies on its event loop
# Ray Serve's throughput-optimized mode (Ray >= 2.55; older ones ignore the variables): gRPC
# between deployments and no thread hop in the replicas, 1.2-1.5x the requests/s of the
# default here (docs/serving.md). Its direct ingress stays off: it would open an HTTP server on
# each ingress replica beside the proxy that taugate serves through. Set for the Ray that
# taugate starts on this machine, unless already set; a cluster's nodes keep their own.
RAY_SERVE_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
# a Ray Serve that has them bounds the requests a caller queues for a deployment (503 past it)
# and says when to retry, as the FastAPI engine does (Retry-After: 1)
_DEPLOYMENT_OPTIONS = inspect.signature(serve.deployment).parameters
_RAY_UNAVAILABLE = tuple(getattr(ray.exceptions, name) for name in (
    "RayActorError", "ActorDiedError", "ActorUnavailableError") if hasattr(ray.exceptions, name))


@dataclass
class RayServeConfig:
    """What ``--engine ray`` deploys."""

    bundle: str  # bundle directory; on a cluster, the same path on every node (shared storage)
    replicas: int = 1  # model replicas
    max_modes_per_replica: int = 4  # sessions a replica keeps loaded (LRU past it), dense counts
    providers: str | list = "cpu"  # onnxruntime providers of the model replicas
    threads: int = 1  # onnxruntime intra-op threads per replica
    replica_cpus: float = 1.0  # Ray CPUs reserved per model replica
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # larger request bodies get 413
    unknown: str = "refuse"  # mode "auto": rows of no known mode refused, or run on "dense"
    batch_delay_ms: float = 0.0  # > 0: replicas batch concurrent requests (0: off)
    max_batch_rows: int = 64  # rows per batch at most
    max_queue: int = 128  # requests the ingress and each replica hold at once, and wait; past: 503
    batcher: str = "taugate"  # "taugate" (taugate.server.batcher) or "serve" (@serve.batch)

    def __post_init__(self) -> None:
        self.bundle = os.path.abspath(os.fspath(self.bundle))
        if isinstance(self.batch_delay_ms, str):  # from `serve run ... key=value`
            try:
                self.batch_delay_ms = float(self.batch_delay_ms)
            except ValueError:
                raise ValueError(f"batch_delay_ms: expected milliseconds, got "
                                 f"{self.batch_delay_ms!r}") from None
        if self.batcher not in ("taugate", "serve"):
            raise ValueError(f"batcher: expected 'taugate' or 'serve', got {self.batcher!r}")
        for name in ("replicas", "max_modes_per_replica", "threads", "max_body_bytes",
                     "max_batch_rows", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, str) and value.isdigit():  # from `serve run ... key=value`
                value = int(value)
                setattr(self, name, value)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        try:
            cpus = float(self.replica_cpus)
        except (TypeError, ValueError):
            cpus = float("nan")
        if not cpus >= 0:
            raise ValueError(f"replica_cpus: expected a number >= 0, got {self.replica_cpus!r}")
        self.replica_cpus = cpus
        check_policy(self.unknown)
        self.batch_policy  # noqa: B018 - refuses a bad delay here, not in every replica

    @property
    def batch_policy(self) -> BatchPolicy:
        return BatchPolicy(self.batch_delay_ms, self.max_batch_rows, self.max_queue)


class TaugateModel:
    """A model replica: a lazy :class:`ModeRuntime` whose sessions Ray multiplexes by mode."""

    def __init__(self, config: RayServeConfig):
        replica_grpc_on_loopback()
        self.runtime = ModeRuntime.open(
            config.bundle, providers=config.providers, lazy=True,
            max_sessions=config.max_modes_per_replica, intra_op_num_threads=config.threads,
            inter_op_num_threads=1)
        self.loads = 0  # sessions this replica has created (a miss of Ray's routing or a new mode)
        self.replica = serve.get_replica_context().replica_id.unique_id
        policy = config.batch_policy
        self.batcher = None
        if policy.enabled and config.batcher == "taugate":
            self.batcher = Batcher(self.runtime.run_mixed, policy)
        elif policy.enabled:
            self._infer = serve.batch(max_batch_size=policy.max_rows,
                                      batch_wait_timeout_s=policy.delay_ms / 1e3)(
                self._serve_batch)

    async def _infer(self, mode: str, x):
        if self.batcher is None:
            return self.runtime.run(mode, x)
        return (await self.batcher.run_async(mode, x))[0]

    async def _serve_batch(self, modes: list, xs: list) -> list:
        """Ray Serve's ``@serve.batch`` target: one request's (mode, x) per list item."""
        rows = [m for m, x in zip(modes, xs) for _ in range(x.shape[0])]
        logits = self.runtime.run_mixed(rows, np.concatenate(xs))
        bounds = np.cumsum([0] + [x.shape[0] for x in xs])
        return [logits[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    async def load_mode(self, mode: str) -> str:
        """Create (and warm up) the session of ``mode``; Ray calls it once per mode it routes
        here and forgets the mode past ``max_modes_per_replica``, least recently used first.
        The runtime's own LRU bound is the same K, so it drops the same session."""
        self.runtime.warmup([mode])
        self.loads += 1
        return mode

    async def run(self, x):
        """Logits of the request's multiplexed mode for the validated batch ``x``, and what this
        replica holds (for the ``x-taugate-replica`` header)."""
        mode = serve.get_multiplexed_model_id()
        before = self.loads  # "hit" is exact for sequential requests, approximate when concurrent
        await self.load_mode(mode)
        logits = await self._infer(mode, x)
        return logits, {"replica": self.replica, "hit": self.loads == before,
                        "loaded": self.runtime.loaded_modes, "loads": self.loads}


async def read_body(request: Request, limit: int):
    """The request's body, or the error to answer: 400 for a bad Content-Length, 413 for a body
    over ``limit`` bytes -- from its Content-Length before reading any of it, or as soon as the
    chunks received pass the limit (the rest is never read nor buffered)."""
    length = request.headers.get("content-length")
    if length is not None:
        declared = content_length(length)
        if declared is None:
            return taugate_error(400, "bad request", f"invalid Content-Length {length[:50]!r}")
        if declared > limit:
            return taugate_error(413, "payload too large", f"request body of {declared} bytes "
                                 f"exceeds the limit of {limit} bytes")
    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                return taugate_error(413, "payload too large", f"request body of at least "
                                     f"{total} bytes exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        return taugate_error(400, "bad request", "the client disconnected while sending the "
                             "body")
    return b"".join(chunks)


class TaugateIngress:
    """Every HTTP request: the shared protocol handler, inference on a model replica."""

    def __init__(self, model, config: RayServeConfig):
        replica_grpc_on_loopback()
        self.model = model
        self.max_body_bytes = config.max_body_bytes
        # Facts and the input checker only: lazy, no session is ever created here.
        self.handler = ProtocolHandler(ModeRuntime.open(config.bundle, providers="cpu",
                                                        lazy=True), unknown=config.unknown)

    async def __call__(self, request: Request) -> Response:
        body = await read_body(request, self.max_body_bytes)
        if isinstance(body, HttpResponse):
            answer = body
        else:
            req = HttpRequest(request.method, request.url.path, request.headers, body)
            served: dict = {}
            answer = await self.handler.handle_async(
                req, lambda mode, x: self._run(mode, x, served),
                offload_json_above=INLINE_JSON_BYTES)
            if served:
                answer.headers[REPLICA_HEADER] = (
                    f"{served['replica']};hit={int(served['hit'])};loads={served['loads']};"
                    f"loaded={','.join(served['loaded'])}")
        self.handler.metrics.responded(answer.status)  # GET /metrics: this ingress's counters
        return Response(answer.body, answer.status, headers=answer.headers)

    async def _run(self, mode: str, x, served: dict):
        """Logits from a model replica that holds ``mode``; what that replica reported goes
        into ``served``."""
        try:
            logits, info = await self.model.options(multiplexed_model_id=mode).run.remote(x)
        except _RAY_UNAVAILABLE as exc:
            raise ServiceUnavailable(f"the replica serving mode {mode!r} is gone "
                                     f"({type(exc).__name__}); Ray Serve replaces it: retry"
                                     ) from exc
        except ray.exceptions.RayTaskError as exc:
            # the replica's own exception (InvalidOutputError, BundleError, ...): re-raised
            # as is, so that the handler maps it as in one process, message without Ray's
            # traceback
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
        served.update(info)
        return logits


def build_app(config: RayServeConfig, ingress_options: dict | None = None,
              model_options: dict | None = None):
    """The Serve application (``serve.run(build_app(cfg), name="taugate", route_prefix="/")``).

    ``ingress_options`` / ``model_options`` are extra ``serve.deployment`` options (e.g.
    ``ray_actor_options``), overriding the defaults below.
    """
    load_manifest(config.bundle)  # fail here, not in every replica, on a missing/bad bundle
    k = config.max_modes_per_replica
    model_cls = type("TaugateModel", (TaugateModel,), {
        "load_mode": serve.multiplexed(max_num_models_per_replica=k)(TaugateModel.load_mode)})
    ingress_defaults, model_defaults = deployment_options(config)
    model = serve.deployment(model_cls, name="TaugateModel",
                             **{**model_defaults, **(model_options or {})})
    ingress = serve.deployment(TaugateIngress, name="TaugateIngress",
                               **{**ingress_defaults, **(ingress_options or {})})
    return ingress.bind(model.bind(config), config)


def deployment_options(config: RayServeConfig) -> tuple[dict, dict]:
    """The ``serve.deployment`` options of the ingress and of the model replicas.

    Each accepts ``max_queue`` requests at once. Ray Serve's default (5) made the HTTP proxy
    and the ingress's handle wait for a free slot with backoffs of 25-500 ms: 32 concurrent
    clients got ~10 requests/s where the same replica serves 130-200 (docs/serving.md). Past
    ``max_queue`` requests waiting at the proxy, it answers 503 (``Retry-After: 1``) rather
    than growing its queue, where the installed Ray Serve offers these options.
    """
    at_once = {"max_ongoing_requests": config.max_queue}
    if "max_queued_requests" in _DEPLOYMENT_OPTIONS:
        at_once["max_queued_requests"] = config.max_queue
    if "backpressure_config" in _DEPLOYMENT_OPTIONS:
        from ray.serve.config import BackpressureConfig

        at_once["backpressure_config"] = BackpressureConfig(retry_after_s=1)
    ingress = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}, **at_once}
    model = {"num_replicas": config.replicas, "max_ongoing_requests": config.max_queue,
             "ray_actor_options": {"num_cpus": config.replica_cpus}}
    return ingress, model


def app_builder(args: dict):
    """For ``serve run taugate.server.ray_app:app_builder bundle=DIR [replicas=N]
    [max_modes_per_replica=K] [threads=1] [replica_cpus=1]`` and Serve config files
    (``import_path`` + ``args``)."""
    known = {f.name for f in fields(RayServeConfig)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown}; valid: {sorted(known)}")
    return build_app(RayServeConfig(**args))


def start_local_ray(**kwargs) -> None:
    """Start a new Ray on this machine (:func:`init_loopback`, ``kwargs`` passed on) with
    :data:`RAY_SYSTEM_CONFIG`, its workers in :data:`RAY_SERVE_ENV` where the environment does
    not already say otherwise."""
    for name, value in RAY_SERVE_ENV.items():
        os.environ.setdefault(name, value)  # inherited by Ray's processes started below
    init_loopback(_system_config=RAY_SYSTEM_CONFIG, **kwargs)


def run_ray(config: RayServeConfig, host: str = LOOPBACK, port: int = 8000) -> None:
    """``taugate serve --engine ray``: start a Ray on this machine whose services listen on
    loopback only (or join a cluster with RAY_ADDRESS), deploy, and serve on ``host:port``
    until interrupted; then remove the application (and stop Ray if we started it)."""
    started = not ray.is_initialized()
    address = os.environ.get("RAY_ADDRESS")
    if started:
        if address:
            ray.init(address=address, include_dashboard=False)
        else:
            start_local_ray()
    if host not in (LOOPBACK, "localhost", "::1"):
        log.warning("listening on %s: the API has no authentication; put it behind a proxy "
                    "that adds it if the network is not trusted", host)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(config), name=APP_NAME, route_prefix="/")
    if started and not address:
        _warn_exposed(port)
    log.warning("taugate on Ray Serve: http://%s:%d (config %s); Ctrl+C stops", host, port,
                asdict(config))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(APP_NAME)
        if started:
            serve.shutdown()
            ray.shutdown()


def _warn_exposed(http_port: int) -> None:
    """Log Ray's sockets that listen beyond loopback (none expected), the HTTP port aside."""
    from taugate.server.ray_local import descendants
    from taugate.server.ray_posture import exposed_sockets

    exposed = [f"{a}:{p}" for a, p in exposed_sockets(descendants() | {os.getpid()})
               if p != http_port]
    if exposed:
        log.warning("Ray services listen beyond loopback: %s; firewall them or join a cluster "
                    "set up for it (RAY_ADDRESS)", ", ".join(exposed))
