"""What the server bounds against slow and hostile clients (see docs/security.md).

* :class:`ServerLimits`: the numbers, validated in one place.
* :func:`guarded_protocol`: uvicorn's HTTP protocol with a cap on open connections (past it a
  new connection is closed at once) and a time limit to receive a request's headers (a client
  that connects and stalls, or trickles header bytes, is disconnected). uvicorn itself only
  times out idle keep-alive connections *after* a response.
* :class:`InFlightLimitMiddleware`: at most ``max_in_flight`` requests other than GET/HEAD
  (inference) at once; past it 503 with ``Retry-After``. GETs -- ``/health`` above all, which
  runs on the event loop, not in the thread pool -- are answered while inference is saturated.
* :class:`BodyLimitMiddleware`: bodies over a byte limit get 413 before any parsing, and a body
  that takes longer than ``body_timeout_s`` to arrive gets 408.

Events that a hostile client can repeat (refused or timed-out connections, invalid requests)
are logged at most once per :data:`LOG_EVERY_S` with counts, so the log cannot be flooded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

log = logging.getLogger("taugate.server")

LOG_EVERY_S = 10.0


def content_length(value: bytes | str) -> int | None:
    """A Content-Length header's value as a byte count; None when it is not a non-negative
    integer (answer 400)."""
    try:
        declared = int(value)
    except ValueError:
        return None
    return declared if declared >= 0 else None


@dataclass(frozen=True)
class ServerLimits:
    """Bounds of one server. Defaults suit one process on a small machine."""

    max_body_bytes: int = 8 * 1024 * 1024  # ~1000 images of 784 floats as JSON text
    max_connections: int = 1000  # open TCP connections; past it new ones are closed at once
    max_in_flight: int = 32  # concurrent non-GET requests; past it 503 (below anyio's 40 threads)
    header_timeout_s: float = 10.0  # from connect (or the previous response) to full headers
    body_timeout_s: float = 30.0  # from the headers to the end of the body
    keep_alive_s: int = 5  # idle keep-alive connections are closed after this

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_connections", "max_in_flight", "keep_alive_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        for name in ("header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name}: expected a number of seconds > 0, got {value!r}")


class RateLimitedLog:
    """Counts repeated events and logs a summary at most once per ``every_s`` seconds."""

    def __init__(self, every_s: float = LOG_EVERY_S):
        self.every_s = every_s
        self.counts: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self._last = -float("inf")

    def note(self, event: str) -> None:
        self.counts[event] = self.counts.get(event, 0) + 1
        self._pending[event] = self._pending.get(event, 0) + 1
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            summary = ", ".join(f"{n} {e}" for e, n in sorted(self._pending.items()))
            self._pending.clear()
            log.warning("connection limits: %s (since the last such line; at most one line "
                        "per %g s)", summary, self.every_s)


class RepeatFilter(logging.Filter):
    """Drops a warning whose message template was logged less than ``every_s`` ago; the next
    one logged says how many were dropped. Errors always pass. For uvicorn's own per-request
    warnings ("Invalid HTTP request received."), which a client can repeat at will."""

    def __init__(self, every_s: float = LOG_EVERY_S):
        super().__init__()
        self.every_s = every_s
        self._last: dict = {}
        self._dropped: dict = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        key, now = (record.name, record.msg), time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.msg = f"{record.msg} ({dropped} more like this not logged)"
        return True


def guarded_protocol(base: type, limits: ServerLimits, events: RateLimitedLog) -> type:
    """A subclass of uvicorn's HTTP protocol class ``base`` (h11 or httptools) that enforces
    ``limits.max_connections`` and ``limits.header_timeout_s``."""

    class GuardedProtocol(base):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._hdr_timer = self._hdr_cycle = None
            if len(self.connections) > limits.max_connections:
                events.note(f"connections closed over the cap of {limits.max_connections}")
                transport.close()
                return
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            # bytes of a new request on a kept-alive connection: its headers get a deadline too
            # (unless one is already running for this request)
            idle = self.cycle is None or self.cycle.response_complete
            if idle and (self._hdr_timer is None or self._hdr_cycle is not self.cycle):
                self._arm_header_timer()
            super().data_received(data)

        def connection_lost(self, exc) -> None:
            if self._hdr_timer is not None:
                self._hdr_timer.cancel()
                self._hdr_timer = None
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            if self._hdr_timer is not None:
                self._hdr_timer.cancel()
            self._hdr_cycle = self.cycle  # a new request (its headers complete) replaces it
            self._hdr_timer = self.loop.call_later(limits.header_timeout_s, self._headers_late,
                                                   self._hdr_cycle)

        def _headers_late(self, cycle) -> None:
            self._hdr_timer = None
            if self.cycle is cycle and not self.transport.is_closing():
                events.note(f"connections closed for not sending request headers within "
                            f"{limits.header_timeout_s:g} s")
                self.transport.close()

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedProtocol


async def send_json_error(send, status: int, error: str, detail: str,
                          headers: list | None = None) -> None:
    body = json.dumps({"error": error, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class InFlightLimitMiddleware:
    """503 (``Retry-After: 1``) for a non-GET/HEAD request past ``max_in_flight`` at once."""

    def __init__(self, app, max_in_flight: int, events: RateLimitedLog | None = None):
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0  # the event loop is one thread: no lock needed
        self.events = events or RateLimitedLog()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_in_flight:
            self.events.note(f"requests refused with 503 over {self.max_in_flight} in flight")
            return await send_json_error(
                send, 503, "server busy", f"{self.max_in_flight} requests are in flight (the "
                f"limit); retry later", [(b"retry-after", b"1")])
        self.in_flight += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class _BodyTimeout(Exception):
    pass


class BodyLimitMiddleware:
    """Answer 413 for bodies larger than ``max_body_bytes``; 400 for a bad Content-Length;
    408 for a body not received within ``body_timeout_s``."""

    def __init__(self, app, max_body_bytes: int, body_timeout_s: float = 30.0):
        if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
            raise ValueError(f"max_body_bytes: expected an integer >= 1, got {max_body_bytes!r}")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.drain_cap = 4 * max_body_bytes + (1 << 20)  # bytes read and discarded at most

    async def _drain(self, receive, total: int) -> int:
        """Read and discard the rest of the body (up to ``drain_cap``) before answering.

        A client sends its whole request before reading the response; answering while it is
        still sending makes the server close a socket with unread data, which the client sees
        as a connection reset instead of the 413. Past the cap we stop reading and close.
        """
        while total <= self.drain_cap:
            message = await receive()
            total += len(message.get("body", b""))
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                break
        return total

    def _too_large(self, size: str) -> str:
        return f"request body of {size} bytes exceeds the limit of {self.max_body_bytes} bytes"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        inner = receive

        async def receive():
            left = deadline - asyncio.get_running_loop().time()
            try:
                return await asyncio.wait_for(inner(), max(left, 0.0))
            except asyncio.TimeoutError:
                raise _BodyTimeout from None

        try:
            return await self._call(scope, receive, send, inner)
        except _BodyTimeout:
            return await send_json_error(send, 408, "request timeout",
                                         f"the request body did not arrive within "
                                         f"{self.body_timeout_s:g} s")

    async def _call(self, scope, receive, send, inner):
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            declared = content_length(length)
            if declared is None:
                return await send_json_error(send, 400, "bad request",
                                             f"invalid Content-Length {length.decode()[:50]!r}")
            if declared > self.max_body_bytes:
                if declared <= self.drain_cap:
                    await self._drain(receive, 0)
                return await send_json_error(send, 413, "payload too large",
                                             self._too_large(str(declared)))
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body_bytes:
                if message.get("more_body", False):
                    total = await self._drain(receive, total)
                return await send_json_error(send, 413, "payload too large",
                                             self._too_large(f"at least {total}"))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await inner()  # later calls wait for the disconnect, as ASGI expects

        return await self.app(scope, replay, send)
