"""The benchmarks' load generator (benchmarks/loadgen.py) counts what it gets right: statuses,
bodies that do not parse, connections closed or silent (timeouts, never a hang), and runs in a
process of its own."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from loadgen import LoadSpec, drive, get, post, run_load

BINARY = b'{"outputs":[]}' + bytes(range(40))  # a JSON header, then raw tensor bytes
ANSWERS = {
    b"/ok": (200, b'{"a":1}', b""),
    b"/busy": (503, b'{"error":"busy"}', b""),
    b"/bad": (200, b"not json", b""),
    b"/bin": (200, BINARY, b"inference-header-content-length: 14\r\n"),
}


async def _serve(reader, writer) -> None:
    """A tiny HTTP/1.1 server: the answers above by path; /close closes, /hang never answers."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ")[1]
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":")[1]))
            if path == b"/close":
                break
            if path == b"/hang":
                await asyncio.sleep(60)
            status, body, extra = ANSWERS[path]
            writer.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n%s\r\n%s"
                         % (status, len(body), extra, body))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


def _drive(paths: list, **kw) -> dict:
    async def main():
        server = await asyncio.start_server(_serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        requests = [post(p, b"x" * 10) if p != "/ok" else get(p) for p in paths]
        try:
            return await drive(LoadSpec("127.0.0.1", port, requests, **kw))
        finally:
            server.close()

    return asyncio.run(main())


def test_statuses_and_unparsed_bodies_are_counted():
    result = _drive(["/ok", "/busy", "/bad", "/bin"], clients=8, per_client=5)
    assert result["statuses"] == {"200": 30, "503": 10}
    assert result["errors"] == {"unparsed": 10}  # /bad only: /bin's JSON header parses
    assert result["requests"] == 40 and result["ok"] == 30
    assert result["p50_ms"] is not None and result["p99_ms"] >= result["p50_ms"]


def test_closed_and_silent_connections_are_errors_not_hangs():
    t0 = time.perf_counter()
    result = _drive(["/close", "/hang"], clients=2, per_client=2, timeout_s=0.2)
    assert time.perf_counter() - t0 < 5
    assert result["errors"] == {"closed": 2, "timeout": 2}
    assert result["statuses"] == {} and result["requests_per_s"] == 0.0


def test_runs_in_its_own_process_against_the_trivial_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(BENCH / "loadgen.py"), "--trivial-server",
                               str(port)], stdout=subprocess.PIPE)
    try:
        assert server.stdout.readline().strip() == b"ready"
        result = run_load(LoadSpec("127.0.0.1", port, [get("/")], clients=3, per_client=4))
    finally:
        server.terminate()
        server.wait(10)
    assert result["statuses"] == {"200": 12} and result["errors"] == {}
    assert result["client_cpu_ms_per_request"] >= 0


def test_open_loop_offers_the_rate_asked():
    result = _drive(["/ok"], clients=4, seconds=0.5, warmup_s=0, rate=200)
    assert 90 <= result["requests"] <= 104  # 200/s for 0.5 s, each client every 20 ms
    assert result["offered_per_s"] == 200 and result["late_sends"] == 0
    assert result["errors"] == {}
