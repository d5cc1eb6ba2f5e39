"""A Ray started by taugate (``taugate serve --engine ray``, ``LocalRayServe``) listens on
loopback only: Ray's cluster services have no authentication. Starts a real Ray (10-30 s)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'taugate[ray]')")

from taugate.server.ray_app import RayServeConfig
from taugate.server.ray_local import LocalRayServe, descendants
from taugate.server.ray_posture import exposed_sockets, listening_sockets

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc (Linux)")
def test_every_ray_service_listens_on_loopback_only(tiny_bundle):
    srv = LocalRayServe(RayServeConfig(tiny_bundle, replica_cpus=0.5), num_cpus=1)
    try:
        srv.start(timeout=180)
        pids = descendants() | {os.getpid()}
        listening = listening_sockets(pids)
        exposed = exposed_sockets(pids)
    finally:
        left = srv.stop()
    assert len(listening) >= 5, listening  # GCS, raylet, object manager, agents, HTTP proxy
    assert exposed == [], f"Ray listens beyond loopback: {exposed}"
    assert not left
