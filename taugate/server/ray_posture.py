"""A Ray started by taugate listens on loopback only.

Ray's cluster services (GCS, raylet, object manager, workers, agents) have no authentication by
default: whoever reaches their ports can run code on the machine. Started as ``ray.init()`` does
on Linux, they listen on the machine's network address or on all interfaces. ``taugate serve
--engine ray`` without ``RAY_ADDRESS`` needs no other node, so :func:`init_loopback` starts Ray
with every service on 127.0.0.1 and no dashboard; :func:`exposed_sockets` lists what listens
elsewhere (Linux), to check it. A real cluster is started by its operator (``ray start``) and
joined with ``RAY_ADDRESS``; its network posture is theirs (see the threat model).
"""

from __future__ import annotations

import ipaddress
import os
import socket

import ray

LOOPBACK = "127.0.0.1"


def init_loopback(**kwargs) -> None:
    """``ray.init(**kwargs)`` for a new single-machine Ray (never one already running here)
    whose services listen on loopback only and that runs no dashboard.

    Ray turns a loopback ``_node_ip_address`` into the machine's address unless it considers
    itself single-machine (its default on macOS and Windows, where it binds loopback for that
    reason); the flag it reads is set for the duration of the call and restored after.
    """
    # address "local": a new instance, never one found running on this machine
    kwargs = {"address": "local", "include_dashboard": False, "dashboard_host": LOOPBACK,
              "_node_ip_address": LOOPBACK, **kwargs}
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - a Ray without the module: its defaults apply
        ray_constants = None
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if saved is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(**kwargs)
    finally:
        if saved is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved


def _socket_inodes(pids) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def _address(hex_ip: str) -> str:
    raw = bytes.fromhex(hex_ip)
    # /proc/net/tcp* write each 32-bit word of the address in host (little-endian) order
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def listening_sockets(pids) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets that the processes ``pids`` listen on (Linux;
    empty where /proc is not readable)."""
    inodes, out = _socket_inodes(pids), []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ip, port = fields[1].split(":")
                out.append((_address(ip), int(port, 16)))
    return sorted(set(out))


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def exposed_sockets(pids) -> list[tuple[str, int]]:
    """The :func:`listening_sockets` of ``pids`` that are reachable from other machines."""
    return [(a, p) for a, p in listening_sockets(pids) if not is_loopback(a)]


def replica_grpc_on_loopback() -> bool:
    """Called in a Serve replica's ``__init__``: on a node whose address is loopback (one
    started by :func:`init_loopback`), Serve's inter-deployment gRPC server -- which Ray Serve
    binds to ``[::]`` whatever the node's address -- listens on loopback instead. Its callers
    are this node's own processes. Returns whether it applies (False on a real cluster, where
    other nodes must reach it, and where this Ray has no such server)."""
    try:
        if not is_loopback(ray.util.get_node_ip_address()):
            return False
        from ray.serve._private import replica
    except (ImportError, ValueError, RuntimeError):
        return False
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None:
        return False
    if getattr(original, "taugate_loopback", False):
        return True

    def add_port(server, address: str):
        if address.startswith("[::]:"):
            address = f"{LOOPBACK}:{address[len('[::]:'):]}"
        return original(server, address)

    add_port.taugate_loopback = True
    replica.add_port_to_grpc_server = add_port
    return True
