"""The dashboard page: plain HTML, CSS and JavaScript shipped in ``taskqueue_fastapi/static``.

No CDN and no build step. The page calls the JSON API with URLs relative to itself, so it
works wherever the router is mounted. Assets are read once, when the router is built.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

__all__ = ["add_dashboard_routes"]

_ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

# The page must not be framed by other sites (its buttons cancel tasks), and it loads
# nothing from anywhere but its own origin.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


def _read(name: str) -> bytes:
    return resources.files("taskqueue_fastapi").joinpath("static", name).read_bytes()


def _asset(body: bytes, media_type: str) -> _Asset:
    return _Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _respond(asset: _Asset, request: Request) -> Response:
    # Revalidate every time (the package may be upgraded under a running browser tab), but
    # answer 304 when the copy the browser holds is current.
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", **_SECURITY_HEADERS}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def add_dashboard_routes(router: APIRouter, *, read_only: bool) -> None:
    """Add ``GET /`` (the page) and ``GET /static/{name}`` (its assets) to ``router``."""
    page_html = _read("dashboard.html").replace(
        b"__READ_ONLY__", b"true" if read_only else b"false"
    )
    page = _asset(page_html, "text/html; charset=utf-8")
    assets = {name: _asset(_read(name), media_type) for name, media_type in _ASSETS.items()}

    @router.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def dashboard_page(request: Request) -> Response:
        # The path always ends with "/" (Starlette redirects "/admin" to "/admin/"), so the
        # page's relative URLs ("api/tasks", "static/dashboard.js") resolve under the prefix.
        return _respond(page, request)

    @router.get("/static/{name}", include_in_schema=False)
    async def dashboard_asset(name: str, request: Request) -> Response:
        asset = assets.get(name)
        if asset is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return _respond(asset, request)
