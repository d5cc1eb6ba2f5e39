"""``/docs`` without the network: a self-contained HTML page listing every endpoint.

FastAPI's own ``/docs`` (Swagger UI) and ``/redoc`` load their JavaScript and CSS from a CDN, so
on a machine without internet access they show a blank page, and a browser that reaches the CDN
runs third-party code next to the API. No installed package ships those assets, so taugate
serves instead a page built from the app's OpenAPI description: no script, no stylesheet or
image from anywhere; it says where the full description is (``/openapi.json``) and how to view
it offline.
"""

from __future__ import annotations

from html import escape

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")

_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ccc;"
          "padding:.3em .5em;text-align:left;vertical-align:top}code{font-size:95%}")


# the browser enforces it too: nothing loads from anywhere, inline style only
_CSP = "default-src 'none'; style-src 'unsafe-inline'"


def _rows(spec: dict) -> list[str]:
    rows = []
    for path, item in spec.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            what = op.get("summary") or op.get("operationId") or ""
            note = op.get("description") or ""
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{escape(path)}"
                        f"</code></td><td>{escape(what)}"
                        f"{'<br><small>' + escape(note) + '</small>' if note else ''}</td></tr>")
    return rows


def docs_html(spec: dict, openapi_url: str = "/openapi.json") -> str:
    """The page for the OpenAPI description ``spec`` (what ``app.openapi()`` returns)."""
    info = spec.get("info", {})
    title = escape(f"{info.get('title', 'API')} {info.get('version', '')}".strip())
    url = escape(openapi_url)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{title}</h1>"
        f"<p>{escape(info.get('description', ''))}</p>"
        f"<p>The full OpenAPI 3 description (request and answer schemas, error bodies) is at "
        f"<a href='{url}'><code>{url}</code></a>. To browse it offline, save it "
        f"(<code>curl -o openapi.json http://HOST:PORT{url}</code>) and open it in any "
        f"OpenAPI viewer you have installed (an editor plugin, or Swagger UI or Redoc from a "
        f"local copy). This page loads nothing from the network.</p>"
        f"<table><tr><th>Method</th><th>Path</th><th>What</th></tr>{''.join(_rows(spec))}"
        f"</table></body></html>")


def mount_docs(app: FastAPI) -> None:
    """Serve :func:`docs_html` at ``/docs`` on an app created with ``docs_url=None`` and
    ``redoc_url=None``."""

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_html(app.openapi(), app.openapi_url or "/openapi.json"),
                            headers={"content-security-policy": _CSP})
