"""``POST /v2/models/{mode}/generate_stream``: Server-Sent Events read by a real HTTP client
from a real server, incrementally; a client that leaves mid-stream frees its generation."""

import http.client
import json
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
import uvicorn

import taugate.server.generate as generate_module
from taugate.runtime.generate import Generator, utf8_pieces
from taugate.server.background import uvicorn_config
from taugate.server.limits import ServerLimits
from taugate.server.lm_app import create_lm_app
from tests.lm_fixtures import PROMPT, code_bundle


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory):
    return code_bundle(tmp_path_factory.mktemp("lmstream") / "bundle", precisions=("fp32",))


class Server:
    """The LM app on 127.0.0.1 (a free port) in a thread, for a real client."""

    def __init__(self, bundle, **kw):
        limits = kw.pop("limits", ServerLimits())
        self.app = create_lm_app(bundle, limits=limits, **kw)
        self.handler = self.app.state.handler
        config = uvicorn_config(self.app, limits, log_level="warning", access_log=False,
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def post(self, path, body):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        return conn, conn.getresponse()


def read_event(resp) -> dict:
    """The next SSE event's JSON, read line by line from the socket."""
    line = resp.readline()
    assert line.startswith(b"data: "), line
    assert resp.readline() == b"\n"
    return json.loads(line[len(b"data: "):])


def gated(monkeypatch, wait_s):
    """Make every piece after the first wait for ``gate`` (at most ``wait_s``): what the
    server sent before that wait is the proof that it streams. Returns the gate and a log of
    the pieces produced and whether the generation was closed."""
    gate, log = threading.Event(), {"pieces": 0, "waited_out": 0, "closed": False}

    def slow(tokens):
        try:
            for i, piece in enumerate(utf8_pieces(tokens)):
                if i and not gate.wait(wait_s):
                    log["waited_out"] += 1
                log["pieces"] += 1
                yield piece
        finally:
            log["closed"] = True

    monkeypatch.setattr(generate_module, "utf8_pieces", slow)
    return gate, log


def test_events_arrive_one_by_one_and_end_with_a_final_event(lm_bundle, monkeypatch):
    gate, log = gated(monkeypatch, wait_s=5)
    body = {"text_input": PROMPT.decode(), "parameters": {"max_tokens": 10}}
    with Server(lm_bundle) as srv:
        conn, resp = srv.post("/v2/models/code/generate_stream", body)
        assert resp.status == 200
        assert resp.getheader("content-type").startswith("text/event-stream")
        first = read_event(resp)  # arrives while the generation waits for the gate
        assert first["model_name"] == "code" and log["pieces"] == 1
        gate.set()
        events = [first]
        while not events[-1].get("finished"):
            events.append(read_event(resp))
        conn.close()
    assert log["waited_out"] == 0 and log["closed"]
    final = events[-1]
    assert final["finish_reason"] == "length" and final["pieces"] == len(events) - 1
    text = "".join(e["text_output"] for e in events)
    assert text == "".join(Generator.open(lm_bundle, "code").text(PROMPT, 10))
    assert srv.handler.open_streams == 0


def test_a_client_leaving_mid_stream_frees_its_generation(lm_bundle, monkeypatch):
    gate, log = gated(monkeypatch, wait_s=0.2)  # unstopped: ~40 pieces x 0.2 s
    with Server(lm_bundle) as srv:
        conn, resp = srv.post("/v2/models/dense/generate_stream", {"text_input": "ab"})
        read_event(resp)
        assert srv.handler.open_streams == 1
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        deadline = time.monotonic() + 5
        while srv.handler.open_streams and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.handler.open_streams == 0 and log["closed"]
        assert log["pieces"] <= 4  # stopped within a token or two, not at max_tokens
        r = srv.post("/v2/models/code/generate", {"text_input": "ab",
                                                    "parameters": {"max_tokens": 3}})[1]
        assert r.status == 200  # the server goes on serving


def test_bad_stream_requests_are_plain_json_errors(lm_bundle):
    with Server(lm_bundle, limits=ServerLimits(max_body_bytes=256)) as srv:
        r = srv.post("/v2/models/code/generate_stream",
                     {"text_input": "hi", "parameters": {"top_k": 0}})[1]
        assert r.status == 422 and "top_k" in json.loads(r.read())["detail"]
        r = srv.post("/v2/models/prose/generate_stream", {"text_input": "hi"})[1]
        assert r.status == 404 and "'code'" in json.loads(r.read())["detail"]
        r = srv.post("/v2/models/code/generate_stream", {"text_input": "x" * 80})[1]
        assert r.status == 422 and "context" in json.loads(r.read())["detail"]
        r = srv.post("/v2/models/code/generate_stream", {"text_input": "y" * 300})[1]
        assert r.status == 413
        assert srv.handler.open_streams == 0


def test_a_stream_past_its_time_limit_ends_with_an_error_event(lm_bundle, monkeypatch):
    gated(monkeypatch, wait_s=0.3)
    with Server(lm_bundle, stream_timeout_s=0.5) as srv:
        conn, resp = srv.post("/v2/models/code/generate_stream", {"text_input": "ab"})
        events = [read_event(resp)]
        while "error" not in events[-1] and not events[-1].get("finished"):
            events.append(read_event(resp))
        conn.close()
        assert "time limit of 0.5 s" in events[-1]["error"]
        deadline = time.monotonic() + 3
        while srv.handler.open_streams and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.handler.open_streams == 0
