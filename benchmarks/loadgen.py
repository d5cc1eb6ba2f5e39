"""A cheap HTTP/1.1 load generator, so that a benchmark measures the server, not its client.

One asyncio process (uvloop when installed) holds ``clients`` keep-alive connections, each
writing pre-built request bytes over a raw socket and reading each response by its
Content-Length: no HTTP library, no thread per client, nothing allocated per request beyond
the response. Every response is checked: its status counted, and a 200's body parsed as JSON
(the JSON header alone when it carries binary tensors); a connection closed, reset or silent
past ``timeout_s`` counts as an error and is reopened. :func:`run_load` runs it in its own
process (its own interpreter lock, its CPU time reported) and returns what it measured.

    spec = LoadSpec("127.0.0.1", 8000, [post("/v2/models/m0/infer", body)], seconds=3)
    result = run_load(spec)   # {"requests_per_s", "p50_ms", "p99_ms", "statuses", ...}

``python benchmarks/loadgen.py --trivial-server PORT`` serves one fixed JSON answer to every
request: the generator's own ceiling is what it drives against that.
"""

from __future__ import annotations

import asyncio
import base64
import json
import resource
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass

HEADER_LENGTH = b"inference-header-content-length"


def post(path: str, body: bytes, headers: dict | None = None, host: str = "127.0.0.1") -> bytes:
    """The bytes of one HTTP/1.1 keep-alive POST of ``body`` to ``path``."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def get(path: str, host: str = "127.0.0.1") -> bytes:
    """The bytes of one HTTP/1.1 keep-alive GET of ``path``."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode("latin-1")


@dataclass
class LoadSpec:
    """What to send: client i sends ``requests[i % len(requests)]`` over and over, for
    ``seconds`` (after ``warmup_s`` not counted) or ``per_client`` requests when given; as soon
    as its last answer came (a closed loop), or at ``rate`` requests/s in all (an open loop)."""

    host: str
    port: int
    requests: list  # pre-built request bytes (:func:`post`, :func:`get`)
    clients: int = 32
    seconds: float = 3.0
    warmup_s: float = 0.5
    per_client: int | None = None  # a fixed count instead of a duration
    timeout_s: float = 30.0  # one request's write + read at most
    # open loop: requests/s offered by all clients together, each client sending at its own
    # fixed interval (clients / rate) instead of as soon as its last answer came
    rate: float | None = None


class _Closed(Exception):
    """The server closed the connection."""


async def _exchange(reader, writer, request: bytes) -> tuple[int, bool, bytes, dict]:
    """(status, keep-alive, body, lower-cased headers) of one request."""
    writer.write(request)
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise _Closed() from exc
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" not in headers:  # chunked answers are not what the servers send
        raise ValueError(f"status {status}: no Content-Length")
    try:
        body = await reader.readexactly(int(headers[b"content-length"]))
    except asyncio.IncompleteReadError as exc:
        raise _Closed() from exc
    keep = headers.get(b"connection", b"").lower() != b"close"
    return status, keep, body, headers


def _parses(body: bytes, headers: dict) -> bool:
    try:
        json_part = body[:int(headers[HEADER_LENGTH])] if HEADER_LENGTH in headers else body
        json.loads(json_part)
    except ValueError:
        return False
    return True


async def _pace(spec: LoadSpec, slot: list, out: dict) -> None:
    """Open loop: wait for this client's next send time; count a send over 1 ms late (the
    previous answer came after its time), which is then sent at once."""
    wait = slot[0] - time.perf_counter()
    if wait > 0:
        await asyncio.sleep(wait)
    elif wait < -1e-3 and slot[0] >= out["counted_from"]:
        out["late"] += 1
    slot[0] += spec.clients / spec.rate


async def _client(spec: LoadSpec, request: bytes, until: float, out: dict, i: int) -> None:
    reader = writer = None
    sent = 0
    slot = [out["start"] + i / spec.rate] if spec.rate else None  # spread over one interval
    while time.perf_counter() < until and (spec.per_client is None or sent < spec.per_client):
        sent += 1
        if slot is not None:
            await _pace(spec, slot, out)
        t0 = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(spec.host, spec.port), spec.timeout_s)
            status, keep, body, headers = await asyncio.wait_for(
                _exchange(reader, writer, request), spec.timeout_s)
        except (asyncio.TimeoutError, _Closed, OSError, ValueError) as exc:
            out["errors"][{asyncio.TimeoutError: "timeout", _Closed: "closed"}.get(
                type(exc), type(exc).__name__)] += 1
            keep = False
            if writer is None:  # refused: not a tight loop of failing connects
                await asyncio.sleep(0.01)
        else:
            out["answered"] += 1
            if t0 >= out["counted_from"]:
                out["statuses"][status] += 1
                if status == 200:
                    out["latencies"].append(time.perf_counter() - t0)
                    if not _parses(body, headers):
                        out["errors"]["unparsed"] += 1
        if not keep and writer is not None:
            writer.close()
            reader = writer = None
            await asyncio.sleep(0)
    if writer is not None:
        writer.close()


async def drive(spec: LoadSpec) -> dict:
    """Run ``spec`` on the running loop; see :func:`run_load` for the result."""
    start = time.perf_counter()
    fixed = spec.per_client is not None
    until = float("inf") if fixed else start + spec.warmup_s + spec.seconds
    out = {"statuses": Counter(), "errors": Counter(), "latencies": [], "answered": 0,
           "late": 0, "start": start,
           "counted_from": start if fixed else start + spec.warmup_s}
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(_client(spec, spec.requests[i % len(spec.requests)], until, out, i)
                           for i in range(spec.clients)))
    wall = time.perf_counter() - out["counted_from"]
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    lat = sorted(out["latencies"])
    ok = len(lat)
    total = sum(out["statuses"].values())
    return {
        "requests_per_s": ok / wall if wall > 0 else 0.0,
        "p50_ms": lat[ok // 2] * 1e3 if ok else None,
        "p99_ms": lat[min(ok - 1, int(0.99 * ok))] * 1e3 if ok else None,
        "requests": total, "ok": ok, "seconds": wall,
        "answered_with_warmup": out["answered"],
        **({"offered_per_s": spec.rate, "late_sends": out["late"]} if spec.rate else {}),
        "statuses": {str(k): v for k, v in sorted(out["statuses"].items())},
        "errors": dict(out["errors"]),
        "client_cpu_ms_per_request": ((cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime
                                       - cpu0.ru_stime) / total * 1e3) if total else None,
    }


def _event_loop():
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


def drive_here(spec: LoadSpec) -> dict:
    """:func:`drive` on a fresh event loop in this process."""
    loop = _event_loop()
    try:
        return loop.run_until_complete(drive(spec))
    finally:
        loop.close()


def run_load(spec: LoadSpec) -> dict:
    """:func:`drive` in a child process of its own. Returns requests/s (of 200 answers, over
    the counted time), p50/p99 latency of the 200 answers in ms, ``statuses`` ({"200": n,
    ...}), ``errors`` ({"closed"|"timeout"|"unparsed"|...: n}) and the generator's own CPU
    ms per request."""
    limit = spec.warmup_s + (spec.seconds if spec.per_client is None
                             else spec.per_client * spec.timeout_s) + 60
    fields = asdict(spec)  # as JSON, the request bytes in base64 (no pickle anywhere)
    fields["requests"] = [base64.b64encode(r).decode("ascii") for r in spec.requests]
    proc = subprocess.run([sys.executable, __file__], input=json.dumps(fields).encode(),
                          capture_output=True, timeout=limit)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr.decode()[-2000:]}")
    return json.loads(proc.stdout)


# -- a trivial server: the generator's ceiling ----------------------------------------------

ANSWER = b'{"ok":true}'


async def _answer(reader, writer) -> None:
    response = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":", 1)[1]))
            writer.write(response)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def trivial_server(port: int, host: str = "127.0.0.1") -> None:
    """Answer every request on ``host:port`` with 200 ``{"ok":true}`` until killed."""
    loop = _event_loop()
    loop.run_until_complete(asyncio.start_server(_answer, host, port))
    print("ready", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--trivial-server":
        trivial_server(int(sys.argv[2]))
    else:
        fields = json.loads(sys.stdin.buffer.read())
        fields["requests"] = [base64.b64decode(r) for r in fields["requests"]]
        spec = LoadSpec(**fields)
        sys.stdout.write(json.dumps(drive_here(spec)))
