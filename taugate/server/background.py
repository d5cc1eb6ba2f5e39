"""Running the app: ``serve`` (foreground, for the CLI) and ``BackgroundServer`` (a uvicorn
server in a thread on a loopback port, for tests and benchmarks)."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from taugate.server.app import DEFAULT_MAX_BODY_BYTES, create_app
from taugate.server.limits import RateLimitedLog, RepeatFilter, ServerLimits, guarded_protocol
from taugate.server.watch import ManifestWatcher

log = logging.getLogger("taugate.server")


def uvicorn_config(app, limits: ServerLimits, **kwargs) -> uvicorn.Config:
    """A uvicorn config whose HTTP protocol enforces ``limits`` (connections, header time)."""
    base = import_from_string(HTTP_PROTOCOLS["auto"])  # httptools if installed, else h11
    protocol = guarded_protocol(base, limits, RateLimitedLog())
    config = uvicorn.Config(app, http=protocol, timeout_keep_alive=limits.keep_alive_s,
                            **kwargs)  # configures uvicorn's loggers: add the filter after
    error_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, RepeatFilter) for f in error_log.filters):
        error_log.addFilter(RepeatFilter())
    return config


def serve(runtime, host: str = "127.0.0.1", port: int = 8000,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, log_level: str = "info",
          limits: ServerLimits | None = None, model_control: bool = False,
          watch_s: float | None = None, unknown: str = "refuse",
          batch=None) -> None:
    """Serve ``runtime`` over HTTP until interrupted (Ctrl+C). ``model_control``: allow the
    repository extension's load and unload; ``watch_s``: poll the bundle's manifest every so
    many seconds and load or unload what changed (:mod:`taugate.server.watch`); ``unknown``:
    what mode ``auto`` does with rows of no known mode (``"refuse"`` or ``"dense"``);
    ``batch``: a :class:`~taugate.server.batcher.BatchPolicy` (dynamic batching)."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: the API has no authentication; put it behind a proxy "
                    "that adds it if the network is not trusted", host)
    limits = limits or ServerLimits(max_body_bytes=max_body_bytes)
    app = create_app(runtime, max_body_bytes=limits.max_body_bytes, limits=limits,
                     model_control=model_control, unknown=unknown, batch=batch)
    watcher = None if watch_s is None else ManifestWatcher(runtime, watch_s).start()
    try:
        uvicorn.Server(uvicorn_config(app, limits, host=host, port=port,
                                      log_level=log_level)).run()
    finally:
        if watcher is not None:
            watcher.stop()


class BackgroundServer:
    """``with BackgroundServer(runtime) as srv: httpx.get(srv.url + "/health")``.

    Binds 127.0.0.1 on a free port chosen by the OS, waits until the server accepts
    connections, and on exit asks uvicorn to shut down and joins the thread.
    """

    def __init__(self, runtime, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 startup_timeout: float = 10.0, limits: ServerLimits | None = None,
                 model_control: bool = False, unknown: str = "refuse", batch=None):
        limits = limits or ServerLimits(max_body_bytes=max_body_bytes)
        self.app = create_app(runtime, max_body_bytes=limits.max_body_bytes, limits=limits,
                              model_control=model_control, unknown=unknown, batch=batch)
        self.startup_timeout = startup_timeout
        config = uvicorn_config(self.app, limits, log_level="warning", access_log=False,
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name="taugate-server", daemon=True)

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server on {self.url} did not start within "
                                   f"{self.startup_timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()
        batcher = self.app.state.handler.batcher
        if batcher is not None:
            batcher.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
