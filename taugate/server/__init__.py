"""The HTTP API of the taugate runtime (FastAPI + uvicorn, the optional ``serve`` extra).

``create_app(runtime, max_body_bytes=...)`` builds the ASGI app; ``serve(...)`` runs it with
uvicorn; ``BackgroundServer`` runs it in a thread on a loopback port (tests, benchmarks).
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"taugate.server needs FastAPI and uvicorn ({exc.name} is missing): "
        f"pip install 'taugate[serve]'") from exc

from taugate.server.app import DEFAULT_MAX_BODY_BYTES, create_app
from taugate.server.background import BackgroundServer, serve
from taugate.server.limits import ServerLimits

__all__ = ["DEFAULT_MAX_BODY_BYTES", "BackgroundServer", "ServerLimits", "create_app", "serve"]
