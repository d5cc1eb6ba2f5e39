"""Starlette requests without a server, for the engines' ingress code (Ray's above all)."""

from __future__ import annotations


def starlette_request(method: str, path: str, headers: dict, chunks: list[bytes]):
    """A Starlette request whose body arrives in ``chunks``; ``.received`` counts the
    messages read."""
    from starlette.requests import Request

    raw = [(k.lower().encode(), str(v).encode()) for k, v in headers.items()]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks or [b""])]

    async def receive():
        receive.count += 1
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    receive.count = 0
    request = Request({"type": "http", "method": method, "path": path, "headers": raw,
                       "query_string": b"", "root_path": ""}, receive)
    request.received = receive
    return request
