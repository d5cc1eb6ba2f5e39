"""Ray's ingress and start-up without starting Ray: the body limit (from Content-Length, or
while the body streams in, never after buffering it), and ``run_ray`` starting a Ray whose
services listen on loopback only. test_server_ray_posture.py checks the sockets of a real one."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'taugate[ray]')")
import ray
from _asgi_fakes import starlette_request
from ray._private import ray_constants

from taugate.server import ray_app
from taugate.server.ray_app import RayServeConfig, TaugateIngress, read_body

LIMIT = 1000


def answer(result) -> tuple[int, dict]:
    assert not isinstance(result, bytes), "expected an error answer, got the body"
    return result.status, json.loads(result.body)


def test_oversized_content_length_is_refused_before_reading():
    request = starlette_request("POST", "/x", {"content-length": 48 * 2 ** 20}, [b"x" * 10])
    status, body = answer(asyncio.run(read_body(request, LIMIT)))
    assert status == 413 and "of 50331648 bytes exceeds the limit of 1000" in body["detail"]
    assert request.received.count == 0  # not one chunk read


@pytest.mark.parametrize("length", ["-1", "12abc", "1e3"])
def test_bad_content_length_is_refused(length):
    request = starlette_request("POST", "/x", {"content-length": length}, [b"x"])
    status, body = answer(asyncio.run(read_body(request, LIMIT)))
    assert status == 400 and "invalid Content-Length" in body["detail"]


def test_streamed_body_stops_at_the_limit():
    # no Content-Length (chunked): 100 chunks of 300 bytes; reading stops at the 4th
    request = starlette_request("POST", "/x", {}, [b"x" * 300] * 100)
    status, body = answer(asyncio.run(read_body(request, LIMIT)))
    assert status == 413 and "at least 1200 bytes exceeds the limit of 1000" in body["detail"]
    assert request.received.count == 4


def test_body_within_the_limit_is_read_whole():
    chunks = [b"a" * 400, b"b" * 400, b"c" * 200]  # exactly the limit
    request = starlette_request("POST", "/x", {"content-length": 1000}, chunks)
    assert asyncio.run(read_body(request, LIMIT)) == b"".join(chunks)


def test_ingress_answers_413_without_running(tiny_bundle):
    class NoModel:
        def options(self, **kwargs):
            raise AssertionError("an oversized request reached the model")

    ingress = TaugateIngress(NoModel(), RayServeConfig(tiny_bundle, max_body_bytes=LIMIT))
    request = starlette_request("POST", "/v2/models/rot0/infer", {}, [b"{" * 600] * 3)
    response = asyncio.run(ingress(request))
    assert response.status_code == 413 and response.headers["connection"] == "close"
    assert request.received.count == 2


def test_run_ray_starts_ray_on_loopback(tiny_bundle, monkeypatch):
    calls, flags = [], []

    def init(**kwargs):
        calls.append(kwargs)
        flags.append(ray_constants.ENABLE_RAY_CLUSTER)

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", raising=False)
    monkeypatch.delenv("RAY_SERVE_ENABLE_DIRECT_INGRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    for name in ("start", "run", "delete", "shutdown"):
        monkeypatch.setattr(ray_app.serve, name, lambda *a, **k: None)
    monkeypatch.setattr(ray_app, "build_app", lambda config: None)
    monkeypatch.setattr(ray_app, "_warn_exposed", lambda port: None)
    monkeypatch.setattr(ray_app.time, "sleep", interrupt)
    before = ray_constants.ENABLE_RAY_CLUSTER

    ray_app.run_ray(RayServeConfig(tiny_bundle))
    (kwargs,) = calls
    assert kwargs["address"] == "local"  # a new Ray, never one found running here
    assert kwargs["_node_ip_address"] == "127.0.0.1"
    assert kwargs["dashboard_host"] == "127.0.0.1" and kwargs["include_dashboard"] is False
    assert flags == [False] and ray_constants.ENABLE_RAY_CLUSTER == before  # restored
    assert kwargs["_system_config"] == ray_app.RAY_SYSTEM_CONFIG
    # Ray's processes inherit Serve's throughput-optimized mode without its direct ingress
    # (an HTTP server on the ingress replica besides the proxy)
    assert os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"
    monkeypatch.setenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0")  # the user's choice stands
    ray_app.start_local_ray()
    assert os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0" and len(calls) == 2

    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a cluster: its posture is its own
    ray_app.run_ray(RayServeConfig(tiny_bundle))
    assert calls[2] == {"address": "10.0.0.1:6379", "include_dashboard": False}


@pytest.mark.parametrize("delay", [0, 2])
def test_deployments_accept_max_queue_requests_at_once(tiny_bundle, monkeypatch, delay):
    # Ray Serve's default of 5 ongoing requests left 32 clients at ~10 requests/s (backoffs)
    config = RayServeConfig(tiny_bundle, replicas=3, replica_cpus=0.5, max_queue=40,
                            batch_delay_ms=delay)
    ingress, model = ray_app.deployment_options(config)
    assert ingress["max_ongoing_requests"] == model["max_ongoing_requests"] == 40
    assert (ingress["num_replicas"], model["num_replicas"]) == (1, 3)
    assert model["ray_actor_options"] == {"num_cpus": 0.5}
    # bounded, 503 with Retry-After: 1 past it, where the installed Ray Serve offers it
    assert ingress.get("max_queued_requests", 40) == 40
    assert getattr(ingress.get("backpressure_config"), "retry_after_s", 1) == 1
    given = {}

    def deployment(cls, name, **options):
        given[name] = options
        return _Bindable()

    monkeypatch.setattr(ray_app.serve, "deployment", deployment)
    ray_app.build_app(config, model_options={"max_ongoing_requests": 7})
    assert given["TaugateIngress"] == ingress  # what build_app deploys, callers' options last
    assert given["TaugateModel"] == {**model, "max_ongoing_requests": 7}


class _Bindable:
    def bind(self, *args):
        return self
