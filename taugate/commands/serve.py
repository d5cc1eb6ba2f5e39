"""Serve a bundle over HTTP: taugate's JSON API and the Open Inference Protocol v2 REST.

Endpoints: GET /health, GET /modes, GET /modes/{mode}, POST /modes/{mode}/predict with
{"inputs": [[784 floats in [0, 1]], ...]}; the Open Inference Protocol under /v2 (/v2/health/live,
/v2/models/{mode}, POST /v2/models/{mode}/infer with JSON or binary tensors); OpenAPI at
/openapi.json and /docs.

--engine fastapi (default, the 'serve' extra): one process; the bundle is fully verified and
every mode loaded before the server starts listening; --max-connections, --max-in-flight,
--header-timeout and --body-timeout bound slow and hostile clients.
--engine ray (the 'ray' extra): Ray Serve, N model replicas each keeping at most K modes loaded,
requests routed by mode to a replica that has it (RAY_ADDRESS joins an existing cluster).
"""

from __future__ import annotations

import logging

HELP = "serve a bundle's modes over HTTP (--engine ray: the 'ray' extra)"
_RAY_ONLY = ("replicas", "max_modes_per_replica", "replica_cpus")
_FASTAPI_LIMITS = ("max_connections", "max_in_flight", "header_timeout", "body_timeout")
_BATCHING = ("batch_delay_ms", "max_batch_rows", "max_queue")
# what the classifier runtime takes and a language model's generate server does not
_NOT_LM = ("providers", "max_sessions", "memory_budget", *_BATCHING, "watch")


def add_arguments(p) -> None:
    p.add_argument("bundle", help="bundle directory (holding manifest.json)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-body-bytes", type=int, default=None,
                   help="refuse request bodies larger than this with 413 (default 8 MiB)")
    p.add_argument("--providers", default=None,
                   help="auto (default; cpu with --engine ray), cpu, cuda, directml, or a "
                        "comma-separated list")
    p.add_argument("--max-sessions", type=int, default=None,
                   help="keep at most N sessions loaded (LRU); default all (fastapi engine)")
    p.add_argument("--memory-budget", default=None, metavar="SIZE",
                   help="bytes the loaded sessions may hold, e.g. 512M or 2G; past it the least "
                        "recently used are dropped (default auto: half the memory available "
                        "at start, logged; none: no byte budget; fastapi engine)")
    p.add_argument("--threads", type=int, default=None,
                   help="onnxruntime intra-op threads per session (default: onnxruntime's; "
                        "1 when more than 16 sessions are loaded; 1 per replica with "
                        "--engine ray)")
    p.add_argument("--precision", choices=["fp32", "int8"], default=None,
                   help="serve the bundle's fp32 (default) or int8 graphs (--engine fastapi)")
    p.add_argument("--engine", choices=["fastapi", "ray"], default="fastapi",
                   help="fastapi: one process (default); ray: Ray Serve replicas")
    p.add_argument("--unknown", choices=["refuse", "dense"], default="refuse",
                   help="model 'auto' (a bundle with a router): rows of no known mode are "
                        "refused (default; 400 or 422 naming the rows) or run on the dense model")
    g = p.add_argument_group("limits against slow and hostile clients (see docs/security.md; "
                             "--engine fastapi)")
    g.add_argument("--max-connections", type=int, default=None,
                   help="open connections at most; past it new ones are closed (default 1000)")
    g.add_argument("--max-in-flight", type=int, default=None,
                   help="inference requests at once; past it 503 (default 32)")
    g.add_argument("--header-timeout", type=float, default=None, metavar="SECONDS",
                   help="time to receive a request's headers (default 10)")
    g.add_argument("--body-timeout", type=float, default=None, metavar="SECONDS",
                   help="time to receive a request's body, then 408 (default 30)")
    g = p.add_argument_group("dynamic batching (docs/serving.md; both engines: on Ray Serve "
                             "each model replica batches what it receives)")
    g.add_argument("--batch-delay-ms", type=float, default=None, metavar="MS",
                   help="coalesce concurrent inference requests (any modes) into one run, "
                        "waiting at most MS milliseconds for others (default 0: off)")
    g.add_argument("--max-batch-rows", type=int, default=None,
                   help="rows per batch at most (default 64)")
    g.add_argument("--max-queue", type=int, default=None,
                   help="requests waiting for a batch at most; past it 503 (default 128); "
                        "with --engine ray also the requests the ingress and each replica "
                        "hold at once")
    g = p.add_argument_group("modes in and out of service while serving (docs/operating.md; "
                             "--engine fastapi)")
    g.add_argument("--model-control", action="store_true",
                   help="allow POST /v2/repository/models/{m}/load and .../unload (off: 403)")
    g.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                   help="poll manifest.json every SECONDS and load new or changed modes, "
                        "unload removed ones")
    g = p.add_argument_group("language-model bundles (docs/lm.md, \"Serving\")")
    g.add_argument("--stream-timeout", type=float, default=None, metavar="SECONDS",
                   help="the time limit of one generate_stream answer, from its first token "
                        "to its final event (default 120)")
    g = p.add_argument_group("Ray Serve (--engine ray)")
    g.add_argument("--replicas", type=int, default=None, help="model replicas (default 1)")
    g.add_argument("--max-modes-per-replica", type=int, default=None,
                   help="modes (dense counts) a replica keeps loaded, LRU past it (default 4)")
    g.add_argument("--replica-cpus", type=float, default=None,
                   help="Ray CPUs reserved per model replica (default 1)")


def _flags(args, names) -> list[str]:
    return [f"--{k.replace('_', '-')}" for k in names if getattr(args, k) is not None]


def _run_ray(args) -> int:
    try:
        from taugate.server.ray_app import RayServeConfig, run_ray
    except ImportError as exc:
        raise RuntimeError(str(exc)) from exc
    if args.max_sessions is not None or args.memory_budget is not None:
        raise ValueError("--max-sessions and --memory-budget are for --engine fastapi; with "
                         "--engine ray use --max-modes-per-replica")
    if args.precision is not None:
        raise ValueError(f"--precision {args.precision}: only with --engine fastapi (Ray Serve's "
                         f"replicas serve the fp32 graphs)")
    control = ["--model-control"] * bool(args.model_control) + _flags(args, ("watch",))
    if control:
        # each model replica holds its own runtime: a mode loaded by the ingress would not
        # reach them, and Ray Serve redeploys replicas rather than mutating them
        raise ValueError(f"{', '.join(control)}: only with --engine fastapi (on Ray Serve, "
                         f"redeploy to change the modes served)")
    given = _flags(args, _FASTAPI_LIMITS)
    if given:
        # Ray's HTTP proxy, not taugate's uvicorn protocol, holds the connections there
        raise ValueError(f"{', '.join(given)}: only with --engine fastapi (Ray Serve's proxy "
                         f"has its own connection handling and batching; --max-body-bytes "
                         f"applies to both)")
    from taugate.commands.predict import parse_providers

    given = {k: getattr(args, k) for k in (*_RAY_ONLY, *_BATCHING, "max_body_bytes")
             if getattr(args, k) is not None}
    if args.providers is not None:
        given["providers"] = parse_providers(args.providers)
    config = RayServeConfig(args.bundle, threads=args.threads or 1, unknown=args.unknown,
                            **given)
    run_ray(config, host=args.host, port=args.port)
    return 0


def _is_lm(bundle) -> bool:
    """Whether ``bundle`` is a language-model bundle (served by the generate endpoint)."""
    from pathlib import Path

    from taugate.bundle.lm import is_lm_manifest
    from taugate.bundle.safe_json import loads_strict, read_regular_file

    try:
        return is_lm_manifest(loads_strict(read_regular_file(Path(bundle) / "manifest.json",
                                                             64 * 1024 * 1024)))
    except (OSError, ValueError):
        return False  # ModeRuntime.open reports what is wrong with it


def _limits(args):
    from taugate.server import ServerLimits

    given = {"max_body_bytes": args.max_body_bytes, "max_connections": args.max_connections,
             "max_in_flight": args.max_in_flight, "header_timeout_s": args.header_timeout,
             "body_timeout_s": args.body_timeout}
    return ServerLimits(**{k: v for k, v in given.items() if v is not None})  # fail fast


def _run_lm(args) -> int:
    """A language-model bundle: the generate endpoints, one process (server/lm_app.py)."""
    given = _flags(args, (*_RAY_ONLY, *_NOT_LM)) + ["--model-control"] * bool(args.model_control)
    if given:
        # the generate server opens one CPU session per model, all at start, unbatched
        raise ValueError(f"{', '.join(given)}: not for language-model bundles (their server "
                         f"opens every model once on the CPU and runs each request alone)")
    if args.stream_timeout is not None and not 0 < args.stream_timeout <= 3600:
        raise ValueError(f"--stream-timeout: expected seconds in (0, 3600], got "
                         f"{args.stream_timeout}")
    from taugate.server.lm_app import serve_lm

    serve_lm(args.bundle, host=args.host, port=args.port, limits=_limits(args),
             precision=args.precision or "fp32", threads=args.threads or 1,
             unknown=args.unknown, stream_timeout_s=args.stream_timeout)
    return 0


def run(args) -> int:
    lm = _is_lm(args.bundle)
    if args.stream_timeout is not None and not lm:
        raise ValueError("--stream-timeout: only for language-model bundles (format_version 3, "
                         "whose generate_stream it bounds)")
    if args.engine == "ray":
        if lm:
            # the generate endpoints run in one process; Ray Serve has no deployment for them
            raise ValueError("--engine ray: language-model bundles (format_version 3) are "
                             "served with --engine fastapi only (generate and "
                             "generate_stream)")
        return _run_ray(args)
    if lm:
        return _run_lm(args)
    given = _flags(args, _RAY_ONLY)
    if given:
        raise ValueError(f"{', '.join(given)}: only with --engine ray (got --engine "
                         f"{args.engine})")
    # a missing fastapi/uvicorn ends in cli.main's one line naming the 'serve' extra
    from taugate.commands.predict import parse_providers
    from taugate.runtime import ModeRuntime
    from taugate.runtime.budget import fmt, parse_size
    from taugate.server import serve
    from taugate.server.batcher import BatchPolicy

    limits = _limits(args)
    given = {"delay_ms": args.batch_delay_ms, "max_rows": args.max_batch_rows,
             "max_queue": args.max_queue}
    batch = BatchPolicy(**{k: v for k, v in given.items() if v is not None})
    budget = args.memory_budget or "auto"
    if budget.strip().lower() != "auto":
        parse_size(budget, "--memory-budget")  # fail fast, naming the flag
    rt = ModeRuntime.open(args.bundle, providers=parse_providers(args.providers or "auto"),
                          max_sessions=args.max_sessions, intra_op_num_threads=args.threads,
                          memory_budget=budget, precision=args.precision or "fp32")
    rt.warmup()
    limit = rt.memory()["limit"]
    logging.getLogger("taugate.server").info(
        "memory budget for loaded sessions: %s (--memory-budget sets it)",
        "none" if limit is None else fmt(limit))
    serve(rt, host=args.host, port=args.port, limits=limits,
          model_control=args.model_control, watch_s=args.watch, unknown=args.unknown,
          batch=batch)
    return 0
