"""ASGI middleware: refuse request bodies over a byte limit with 413, before any parsing.

``Content-Length`` is checked first; chunked bodies (no length) are counted while they are
read, so a client cannot stream past the limit either. The body is buffered (the JSON endpoint
needs all of it anyway) and replayed to the app.
"""

from __future__ import annotations

import json


async def send_json_error(send, status: int, error: str, detail: str) -> None:
    body = json.dumps({"error": error, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Answer 413 for bodies larger than ``max_body_bytes``; 400 for a bad Content-Length."""

    def __init__(self, app, max_body_bytes: int):
        if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
            raise ValueError(f"max_body_bytes: expected an integer >= 1, got {max_body_bytes!r}")
        self.app = app
        self.max_body_bytes = max_body_bytes
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
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
                if declared < 0:
                    raise ValueError
            except ValueError:
                return await send_json_error(send, 400, "bad request",
                                             f"invalid Content-Length {length.decode()!r}")
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
            return await receive()  # later calls wait for the disconnect, as ASGI expects

        return await self.app(scope, replay, send)
