"""taugate.server.limits on a real uvicorn server: slow and stalled clients, connection and
in-flight caps, /health while saturated, unavailable modes, invalid model output."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from taugate.runtime import ModeRuntime
from taugate.server import BackgroundServer, ServerLimits

PIXELS = {"inputs": [[0.5] * 784]}
OIP_PIXELS = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 784],
                          "data": [0.5] * 784}]}


def _connect(server, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _closed_by_server(s: socket.socket) -> bool:
    """Blocks until the server sends something or closes; True when it closed silently."""
    try:
        return s.recv(65536) == b""
    except ConnectionResetError:
        return True


def _read_response(s: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture
def log_lines():
    handler = _Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "taugate.server")]
    for lg in loggers:
        lg.addHandler(handler)
    yield handler.lines
    for lg in loggers:
        lg.removeHandler(handler)


@pytest.fixture(scope="module")
def runtime(tiny_bundle):
    return ModeRuntime.open(tiny_bundle)


def test_limits_are_validated():
    for bad in ({"max_in_flight": 0}, {"max_connections": True}, {"header_timeout_s": 0},
                {"body_timeout_s": "1"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServerLimits(**bad)


def test_stalled_connections_do_not_stop_health_and_do_not_flood_the_log(runtime, log_lines):
    """The issue's measurement: 300 connections that send part of their headers and stall."""
    limits = ServerLimits(header_timeout_s=2.0)
    with BackgroundServer(runtime, limits=limits) as server:
        stalled = []
        for _ in range(300):
            s = _connect(server)
            s.sendall(b"POST /modes/rot0/predict HTTP/1.1\r\nHost: x\r\nContent-Le")
            stalled.append(s)
        with httpx.Client(base_url=server.url, timeout=5) as client:
            took = []
            for _ in range(5):
                t0 = time.perf_counter()
                r = client.get("/health")
                took.append(time.perf_counter() - t0)
                assert r.status_code == 200 and r.json()["status"] == "ok"
            print(f"/health with 300 stalled connections: median {np.median(took) * 1e3:.1f} ms")
        # each stalled connection is closed by the server once its header time is up
        for s in stalled:
            s.settimeout(10)
            assert _closed_by_server(s)
            s.close()
    limit_lines = [line for line in log_lines if "connection" in line.lower()]
    assert 1 <= len(limit_lines) <= 3, log_lines  # counts, not one line per connection
    assert "closed for not sending request headers within 2 s" in limit_lines[0]


def test_invalid_http_requests_do_not_flood_the_log(runtime):
    with BackgroundServer(runtime) as server:
        handler = _Records()  # attached after uvicorn configured its loggers
        logging.getLogger("uvicorn.error").addHandler(handler)
        log_lines = handler.lines
        for _ in range(50):
            s = _connect(server)
            s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert _read_response(s).startswith(b"HTTP/1.1 400")  # then closed
            s.close()
    logging.getLogger("uvicorn.error").removeHandler(handler)
    invalid = [line for line in log_lines if "Invalid HTTP request" in line]
    assert len(invalid) == 1, log_lines


def test_trickled_headers_on_a_kept_alive_connection_time_out(runtime):
    with BackgroundServer(runtime, limits=ServerLimits(header_timeout_s=0.5)) as server:
        s = _connect(server)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /health HTTP/1.1\r\n")  # a second request that never completes
        for _ in range(3):
            try:
                s.sendall(b"X-A: b\r\n")
            except OSError:
                break
            time.sleep(0.2)
        assert _closed_by_server(s)
        s.close()


def test_slow_body_gets_408(runtime):
    with BackgroundServer(runtime, limits=ServerLimits(body_timeout_s=0.5)) as server:
        s = _connect(server)
        s.sendall(b"POST /modes/rot0/predict HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"inp")
        response = _read_response(s)  # the server answers, then closes
        s.close()
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
        assert json.loads(body)["error"] == "request timeout"


def test_connection_cap(runtime):
    with BackgroundServer(runtime, limits=ServerLimits(max_connections=5,
                                                       header_timeout_s=30)) as server:
        idle = [_connect(server) for _ in range(5)]
        time.sleep(0.2)  # let the server register them
        extra = _connect(server)
        assert _closed_by_server(extra)
        for s in (*idle, extra):
            s.close()
        deadline = time.monotonic() + 10
        while True:  # the slots free up once the server sees the closes
            try:
                r = httpx.get(server.url + "/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert r.status_code == 200


class _BlockingRuntime:
    """A runtime whose ``run`` waits for ``release``: saturates inference on purpose."""

    def __init__(self, runtime):
        self._rt = runtime
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def __getattr__(self, name):
        return getattr(self._rt, name)

    def run(self, mode, x):
        self.entered.release()
        assert self.release.wait(30)
        return self._rt.run(mode, x)


def test_in_flight_cap_and_health_while_saturated(runtime):
    blocking = _BlockingRuntime(runtime)
    with BackgroundServer(blocking, limits=ServerLimits(max_in_flight=2)) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client, \
            ThreadPoolExecutor(2) as pool:
        busy = [pool.submit(client.post, "/modes/rot0/predict", json=PIXELS) for _ in range(2)]
        for _ in range(2):
            assert blocking.entered.acquire(timeout=10)
        r = client.post("/modes/rot45/predict", json=PIXELS)
        assert r.status_code == 503 and r.json()["error"] == "server busy"
        assert r.headers["retry-after"] == "1" and r.headers["connection"] == "close"
        r = client.post("/v2/models/rot45/infer", json=OIP_PIXELS)  # the cap counts the OIP too
        assert r.status_code == 503 and r.headers["connection"] == "close"
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        for path in ("/v2/health/live", "/v2/health/ready"):
            assert client.get(path).status_code == 200
        assert client.get("/modes").status_code == 200
        blocking.release.set()
        assert [f.result().status_code for f in busy] == [200, 200]
        assert client.post("/modes/rot45/predict", json=PIXELS).status_code == 200


def test_changed_and_deleted_files_answer_503_and_health_degrades(tiny_bundle, tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, root)
    rt = ModeRuntime.open(root, max_sessions=1)
    with BackgroundServer(rt) as server, httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.get("/health").json()["status"] == "ok"
        (root / "modes" / "rot0.onnx").unlink()
        with (root / "modes" / "rot45.onnx").open("ab") as f:
            f.write(b"x")
        health = c.get("/health").json()
        assert health["status"] == "degraded" and set(health["unavailable"]) == {"rot0", "rot45"}
        for mode in ("rot0", "rot45"):  # the protocol's model readiness: a 4xx means not ready
            r = c.get(f"/v2/models/{mode}/ready")
            assert r.status_code == 400 and r.json()["ready"] is False, r.text
        assert c.get("/v2/models/dense/ready").json()["ready"] is True
        c.post("/modes/dense/predict", json=PIXELS)  # evicts whatever is loaded (max 1)
        for mode, reason in (("rot0", "missing from bundle"), ("rot45", "sha256 mismatch")):
            r = c.post(f"/modes/{mode}/predict", json=PIXELS)
            assert r.status_code == 503 and r.json()["error"] == "mode unavailable"
            assert reason in r.json()["detail"] and r.headers["connection"] == "close"
            r = c.post(f"/v2/models/{mode}/infer", json=OIP_PIXELS)
            assert r.status_code == 503 and reason in r.json()["error"]
            assert r.headers["connection"] == "close"
        assert c.post("/modes/dense/predict", json=PIXELS).status_code == 200


def test_invalid_model_output_is_a_json_500_that_closes(tiny_bundle, tmp_path):
    from test_runtime_sessions import _nan_bomb_model

    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, root)
    data = _nan_bomb_model()
    (root / "modes" / "rot0.onnx").write_bytes(data)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["modes"]["rot0"]["sha256"] = hashlib.sha256(data).hexdigest()
    (root / "manifest.json").write_text(json.dumps(manifest))
    x = [[0.0] * 784]
    x[0][0] = x[0][2] = 1.0
    with BackgroundServer(ModeRuntime.open(root)) as server, \
            httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.post("/modes/rot0/predict", json={"inputs": x})
        assert r.status_code == 500 and r.headers["connection"] == "close"
        assert r.json()["error"] == "invalid model output"
        assert "the model produced invalid output" in r.json()["detail"]
        r = c.post("/v2/models/rot0/infer", json={"inputs": [
            {"name": "pixels", "datatype": "FP32", "shape": [1, 784], "data": x[0]}]})
        assert r.status_code == 500 and r.headers["connection"] == "close"
        assert "the model produced invalid output" in r.json()["error"]
        assert c.get("/health").status_code == 200
