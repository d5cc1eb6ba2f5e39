"""Server-Sent Events for the streaming generate endpoint (Triton's ``generate_stream``).

:class:`TokenStream` wraps one generation's text pieces so that it can be closed from the event
loop at any time, even while a worker thread computes its next token: the generation's
key/value cache is freed at once, or right after that token. :class:`SSEResponse` is the ASGI
response that sends one ``data: {...}`` event per piece, then a final event, and stops (closing
the stream) when the client disconnects, when the stream's time limit passes, or on an error
(an ``{"error": ...}`` event, as Triton sends). Each token runs in the server's thread pool, so
a stream holds no thread of its own between tokens.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Callable, Iterator

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

MEDIA_TYPE = "text/event-stream; charset=utf-8"


def event(payload: dict) -> bytes:
    """One SSE event carrying ``payload`` as JSON."""
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"


class _Gone(Exception):
    """The client disconnected."""


class TokenStream:
    """Text pieces of one generation, pulled one at a time by :meth:`next` (in a worker
    thread) and closed by :meth:`close` (from any thread, never blocking). ``on_close`` runs
    once, when the generation is closed."""

    def __init__(self, pieces: Iterator[str], on_close: Callable[[], None] | None = None):
        self._pieces, self._on_close = pieces, on_close
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def next(self) -> str | None:
        """The next piece; None at the end or once closed."""
        with self._lock:
            piece = None if self._closed else next(self._pieces, None)
            if piece is None:
                self._finish()
        if self._closed:  # close() may have found the lock held by this call
            self.close()
        return piece

    def close(self) -> None:
        self._closed = True
        if self._lock.acquire(blocking=False):  # else the running next() finishes it
            try:
                self._finish()
            finally:
                self._lock.release()

    def _finish(self) -> None:
        self._closed = True
        if self._pieces is not None:
            pieces, self._pieces = self._pieces, None
            try:
                pieces.close()
            finally:
                if self._on_close is not None:
                    self._on_close()


class SSEResponse(Response):
    """ASGI response streaming ``stream`` as SSE: ``{**head, "text_output": piece}`` per piece,
    then ``{**head, "text_output": "", **final}`` with ``"finished": true``. ``timeout_s``
    bounds the whole stream (past it: an error event and the end)."""

    def __init__(self, stream: TokenStream, head: dict, final: dict, timeout_s: float):
        self.stream, self.head, self.final, self.timeout_s = stream, head, final, timeout_s
        self.background = None  # a Response to FastAPI, which may attach background tasks
        self.status_code, self.media_type = 200, MEDIA_TYPE

    async def __call__(self, scope, receive, send) -> None:
        gone = asyncio.Event()

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        listener = asyncio.ensure_future(listen())
        try:
            await self._send_all(send, gone)
        except asyncio.TimeoutError:
            pass  # the client stopped reading: the server closes the unfinished response
        finally:
            self.stream.close()
            listener.cancel()

    async def _send_all(self, send, gone: asyncio.Event) -> None:
        deadline = time.monotonic() + self.timeout_s
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", MEDIA_TYPE.encode()),
                                (b"cache-control", b"no-cache")]})
        count = 0
        gone_wait = asyncio.ensure_future(gone.wait())
        try:
            while True:
                piece = await self._next(gone, gone_wait, deadline)
                if piece is None:
                    break
                count += 1
                await self._send(send, event({**self.head, "text_output": piece}), True,
                                 deadline)
        except _Gone:
            return
        except asyncio.TimeoutError:
            await self._end(send, {"error": f"the stream exceeded its time limit of "
                                            f"{self.timeout_s:g} s"}, deadline + 1)
            return
        except Exception as exc:  # the generation failed mid-stream
            await self._end(send, {"error": type(exc).__name__}, deadline + 1)
            return
        finally:
            gone_wait.cancel()
        await self._end(send, {**self.head, "text_output": "", "finished": True,
                               "pieces": count, **self.final}, deadline + 1)

    async def _next(self, gone: asyncio.Event, gone_wait, deadline: float) -> str | None:
        """The next piece, computed in the thread pool; :class:`_Gone` as soon as the client
        disconnects (the running token then finishes and closes the stream), TimeoutError
        past ``deadline``."""
        if gone.is_set():
            raise _Gone
        left = deadline - time.monotonic()
        if left <= 0:
            raise asyncio.TimeoutError
        task = asyncio.ensure_future(run_in_threadpool(self.stream.next))
        done, _ = await asyncio.wait({task, gone_wait}, timeout=left,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()  # the worker thread finishes its token; close() then frees the stream
        raise _Gone if gone.is_set() else asyncio.TimeoutError

    async def _end(self, send, payload: dict, deadline: float) -> None:
        await self._send(send, event(payload), False, deadline)

    @staticmethod
    async def _send(send, body: bytes, more: bool, deadline: float) -> None:
        """Send with the stream's deadline: a client that stops reading cannot hold it."""
        await asyncio.wait_for(send({"type": "http.response.body", "body": body,
                                     "more_body": more}),
                               max(deadline - time.monotonic(), 0.001))
