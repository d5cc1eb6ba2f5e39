"""Serve a bundle over HTTP (FastAPI + uvicorn, the ``serve`` extra).

Endpoints: GET /health, GET /modes, GET /modes/{mode}, POST /modes/{mode}/predict with
{"inputs": [[784 floats in [0, 1]], ...]}; OpenAPI at /openapi.json and /docs. The bundle is
fully verified and every mode loaded before the server starts listening.
"""

from __future__ import annotations

HELP = "serve a bundle's modes over HTTP"


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
                   help="onnxruntime intra-op threads per session (default: onnxruntime's)")


def run(args) -> int:
    # a missing fastapi/uvicorn ends in cli.main's one line naming the 'serve' extra
    from taugate.commands.predict import parse_providers
    from taugate.runtime import ModeRuntime
    from taugate.server import DEFAULT_MAX_BODY_BYTES, serve

    rt = ModeRuntime.open(args.bundle, providers=parse_providers(args.providers),
                          max_sessions=args.max_sessions, intra_op_num_threads=args.threads)
    rt.warmup()
    serve(rt, host=args.host, port=args.port,
          max_body_bytes=args.max_body_bytes or DEFAULT_MAX_BODY_BYTES)
    return 0
