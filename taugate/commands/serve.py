"""Serve a bundle over HTTP (FastAPI + uvicorn, the ``serve`` extra).

Endpoints: GET /health, GET /modes, GET /modes/{mode}, POST /modes/{mode}/predict with
{"inputs": [[784 floats in [0, 1]], ...]}; OpenAPI at /openapi.json and /docs. The bundle is
fully verified and every mode loaded before the server starts listening.
"""

from __future__ import annotations

HELP = "serve a bundle's modes over HTTP (needs the 'serve' extra)"


def add_arguments(p) -> None:
    p.add_argument("bundle", help="bundle directory (holding manifest.json)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-body-bytes", type=int, default=None,
                   help="refuse request bodies larger than this with 413 (default 8 MiB)")
    p.add_argument("--providers", default="auto",
                   help="auto (default), cpu, cuda, directml, or a comma-separated list")
    p.add_argument("--max-sessions", type=int, default=None,
                   help="keep at most N sessions loaded (LRU); default all")
    p.add_argument("--threads", type=int, default=None,
                   help="onnxruntime intra-op threads per session (default: onnxruntime's; "
                        "1 when more than 16 sessions are loaded)")
    g = p.add_argument_group("limits against slow and hostile clients (see README: Threat model)")
    g.add_argument("--max-connections", type=int, default=None,
                   help="open connections at most; past it new ones are closed (default 1000)")
    g.add_argument("--max-in-flight", type=int, default=None,
                   help="inference requests at once; past it 503 (default 32)")
    g.add_argument("--header-timeout", type=float, default=None, metavar="SECONDS",
                   help="time to receive a request's headers (default 10)")
    g.add_argument("--body-timeout", type=float, default=None, metavar="SECONDS",
                   help="time to receive a request's body, then 408 (default 30)")


def run(args) -> int:
    try:
        from taugate.server import ServerLimits, serve
    except ImportError as exc:
        raise RuntimeError(str(exc)) from exc
    from taugate.commands.predict import parse_providers
    from taugate.runtime import ModeRuntime

    given = {"max_body_bytes": args.max_body_bytes, "max_connections": args.max_connections,
             "max_in_flight": args.max_in_flight, "header_timeout_s": args.header_timeout,
             "body_timeout_s": args.body_timeout}
    limits = ServerLimits(**{k: v for k, v in given.items() if v is not None})  # fail fast
    rt = ModeRuntime.open(args.bundle, providers=parse_providers(args.providers),
                          max_sessions=args.max_sessions, intra_op_num_threads=args.threads)
    rt.warmup()
    serve(rt, host=args.host, port=args.port, limits=limits)
    return 0
