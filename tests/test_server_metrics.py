"""``GET /metrics``: Prometheus' text format, parsed line by line after a few requests; the
counters move by exactly what was sent, buckets are cumulative, both APIs count alike."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from taugate.runtime import ModeRuntime
from taugate.server import create_app
from taugate.server.metrics import BUCKETS
from taugate.server.prometheus import CONTENT_TYPE

X = np.random.default_rng(5).random((3, 784), dtype=np.float32).tolist()
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"^({NAME})(\{{(?:{LABEL})(?:,{LABEL})*\}})? (\S+)$")
META = re.compile(rf"^# (HELP|TYPE) ({NAME}) (.+)$")
TYPES = {"counter", "gauge", "histogram"}


def parse(text: str) -> dict:
    """(name, frozenset of labels) -> value; fails on any line not in the 0.0.4 format."""
    assert text.endswith("\n")
    samples, typed = {}, {}
    for line in text.splitlines():
        meta = META.match(line)
        if meta:
            if meta[1] == "TYPE":
                assert meta[3] in TYPES, line
                typed[meta[2]] = meta[3]
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match[1], match[2] or "", match[3]
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or family in typed, f"{name}: no # TYPE before it"
        pairs = frozenset(re.findall(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"', labels))
        key = (name, pairs)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return samples


def get(samples, name, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def client(tiny_bundle):
    return TestClient(create_app(ModeRuntime.open(tiny_bundle)))


def scrape(client) -> dict:
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"] == CONTENT_TYPE
    return parse(answer.text)


def _infer(client, mode, rows):
    return client.post(f"/v2/models/{mode}/infer", json={"inputs": [
        {"name": "pixels", "shape": [len(rows), 784], "datatype": "FP32", "data": rows}]})


def test_counters_move_by_what_was_sent(client):
    before = scrape(client)
    assert client.post("/modes/rot0/predict", json={"inputs": X}).status_code == 200
    assert _infer(client, "rot0", X[:2]).status_code == 200
    assert client.post("/modes/rot0/predict", json={"inputs": [[2.0] * 784]}).status_code == 422
    assert client.post("/modes/nope/predict", json={"inputs": X}).status_code == 404
    assert _infer(client, "made-up", X).status_code == 404
    after = scrape(client)

    def delta(name, **labels):
        return get(after, name, **labels) - get(before, name, **labels)

    assert delta("taugate_inference_requests_total", mode="rot0") == 3
    assert delta("taugate_inference_rows_total", mode="rot0") == 5
    assert delta("taugate_inference_failures_total", mode="rot0", cause="invalid_input") == 1
    assert delta("taugate_inference_requests_total", mode="(unknown)") == 2
    assert delta("taugate_inference_failures_total", mode="(unknown)",
                 cause="unknown_model") == 2
    assert delta("taugate_inference_request_duration_seconds_count", mode="rot0") == 3
    assert delta("taugate_http_responses_total", code="200") == 3  # + the first scrape
    assert delta("taugate_http_responses_total", code="404") == 2
    assert get(after, "taugate_inference_phase_seconds_total", mode="rot0", phase="infer") > 0
    assert get(after, "taugate_sessions_resident") == 3  # dense, rot0, rot45
    assert get(after, "taugate_session_bytes", mode="rot45") > 0
    assert get(after, "taugate_modes", state="ready") == 3


def test_histogram_buckets_are_cumulative(client):
    for _ in range(4):
        client.post("/modes/rot45/predict", json={"inputs": X[:1]})
    samples = scrape(client)
    bounds = [repr(b) for b in BUCKETS] + ["+Inf"]
    counts = [get(samples, "taugate_inference_request_duration_seconds_bucket", mode="rot45",
                  le=le) for le in bounds]
    assert counts == sorted(counts) and counts[-1] == 4
    assert get(samples, "taugate_inference_request_duration_seconds_count", mode="rot45") == 4
    assert 0 < get(samples, "taugate_inference_request_duration_seconds_sum", mode="rot45") < 40


def test_process_gauges(client):
    samples = scrape(client)
    assert get(samples, "process_cpu_seconds_total") > 0
    if get(samples, "process_start_time_seconds"):  # /proc: Linux
        assert get(samples, "process_resident_memory_bytes") > 1e6
        assert get(samples, "process_open_fds") >= 3


def test_prometheus_client_parses_it(client):
    parser = pytest.importorskip("prometheus_client.parser")
    client.post("/modes/rot0/predict", json={"inputs": X})
    families = {f.name: f for f in parser.text_string_to_metric_families(
        client.get("/metrics").text)}
    assert families["taugate_inference_request_duration_seconds"].type == "histogram"
    assert families["taugate_inference_requests"].type == "counter"
