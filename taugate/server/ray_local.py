"""``LocalRayServe``: a private Ray instance on this machine serving a bundle, for tests and
benchmarks (the Ray counterpart of :class:`taugate.server.BackgroundServer`).

    with LocalRayServe(RayServeConfig(bundle, replicas=2), num_cpus=2) as srv:
        httpx.get(srv.url + "/v2/health/ready")

It starts Ray (every service on loopback, no dashboard, access logs off), deploys :func:`build_app` on a free loopback port,
and on exit removes the application and stops Ray. ``stop`` reports the processes Ray started
that are still alive afterwards.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import ray
from ray import serve
from ray.serve.schema import LoggingConfig

from taugate.server.ray_app import APP_NAME, RayServeConfig, build_app, start_local_ray


def _children() -> dict[int, list[int]]:
    """ppid -> pids, from /proc (Linux); empty elsewhere."""
    tree: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return tree
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z":  # zombies are exited processes waiting to be reaped
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def descendants(pid: int | None = None) -> set[int]:
    """Live processes below ``pid`` (default: this one)."""
    tree, found = _children(), set()
    todo = [os.getpid() if pid is None else pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRayServe:
    """A private local Ray + Serve deployment of ``config`` (see the module docstring)."""

    def __init__(self, config: RayServeConfig, num_cpus: int = 2, port: int | None = None,
                 **build_options):
        self.config = config
        self.num_cpus = num_cpus
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.build_options = build_options
        self.processes: set[int] = set()  # what Ray started, seen while it was up

    def start(self, timeout: float | None = None) -> LocalRayServe:
        """Start Ray here and deploy; ``TimeoutError`` if the application is not ready within
        ``timeout`` seconds (then call :meth:`stop`)."""
        if ray.is_initialized():
            raise RuntimeError("Ray is already initialized in this process; LocalRayServe "
                               "starts its own")
        # Called on this (long-lived) thread on purpose: Ray's GCS and raylet are started with
        # PR_SET_PDEATHSIG, which kills them when the *thread* that spawned them exits.
        start_local_ray(num_cpus=self.num_cpus, log_to_driver=False, configure_logging=False)
        serve.start(http_options={"host": "127.0.0.1", "port": self.port})
        self.deploy(self.config, timeout=timeout, **self.build_options)
        return self

    def deploy(self, config: RayServeConfig, timeout: float | None = None,
               **build_options) -> None:
        """(Re)deploy the application with ``config``; returns once it is ready."""
        self.config = config
        outcome: dict = {}

        def run():  # replicas are Ray workers (children of the raylet): any thread may deploy
            try:
                serve.run(build_app(config, **build_options), name=APP_NAME, route_prefix="/",
                          logging_config=LoggingConfig(enable_access_log=False,
                                                       log_level="WARNING"))
                outcome["ok"] = True
            except BaseException as exc:  # re-raised below
                outcome["error"] = exc

        thread = threading.Thread(target=run, name="taugate-ray-deploy", daemon=True)
        thread.start()
        thread.join(timeout)
        self.processes |= descendants()
        if thread.is_alive():
            raise TimeoutError(f"Ray Serve application not ready within {timeout} s")
        if "error" in outcome:
            raise outcome["error"]

    def model_replicas(self) -> dict[str, str]:
        """replica id -> actor name of the live model replicas."""
        out = {}
        for actor in ray.util.list_named_actors(all_namespaces=True):
            name = actor["name"]
            if actor["namespace"] == "serve" and "#TaugateModel#" in name:
                out[name.rsplit("#", 1)[1]] = name
        return out

    def stop(self, timeout: float = 30.0) -> set[int]:
        """Remove the application, stop Serve and Ray; returns the pids Ray started that are
        still alive ``timeout`` seconds later (empty on a clean shutdown)."""
        if not ray.is_initialized():
            return set()
        self.processes |= descendants()
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
        deadline = time.monotonic() + timeout
        while True:
            left = self.processes & descendants()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
