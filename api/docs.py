"""The API's documentation page: Swagger UI at /docs.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and ReDoc's fonts from Google):
they break on a network without internet access, and every visit tells a third party who
reads the city's API documentation. Here /docs loads its JavaScript, CSS and favicon from
the app itself, under /static/docs, from the files the `fastapi-offline` package ships
(Swagger UI 5: Swagger UI 4 cannot show FastAPI's OpenAPI 3.1). Swagger UI's online
validator is switched off, so nothing leaves the site. ReDoc is not offered: its bundle
always loads its vendor's logo from the vendor's CDN, and Swagger UI shows the same
document. The pages have a Content-Security-Policy that allows this origin only, with
their inline start-up script allowed by hash.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Final

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["DOCS_ASSETS_DIR", "DOCS_STATIC_PATH", "install_docs"]

#: swagger-ui-bundle.js, swagger-ui.css and favicon.png (and ReDoc's bundle, unused) from
#: the fastapi-offline package, served at DOCS_STATIC_PATH.
DOCS_ASSETS_DIR: Final = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_STATIC_PATH: Final = "/static/docs"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def install_docs(
    app: FastAPI,
    *,
    docs_url: str = "/docs",
    oauth2_redirect_url: str = "/docs/oauth2-redirect",
) -> None:
    """Add Swagger UI and its assets to `app`, which must have been built with
    `docs_url=None, redoc_url=None` (FastAPI's CDN pages off)."""
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("build the app with docs_url=None and redoc_url=None")
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError("the documentation pages need the app's OpenAPI document")
    app.mount(DOCS_STATIC_PATH, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-static")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root_path(request)
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_STATIC_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC_PATH}/favicon.png",
            oauth2_redirect_url=root + oauth2_redirect_url,
            init_oauth=app.swagger_ui_init_oauth,
            # null: no request to swagger.io's online validator
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )
        return _with_policy(page)

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return _with_policy(get_swagger_ui_oauth2_redirect_html())

    app.add_route(docs_url, swagger_ui, include_in_schema=False)
    app.add_route(oauth2_redirect_url, swagger_ui_redirect, include_in_schema=False)


def _root_path(request: Request) -> str:
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    """`page` with a Content-Security-Policy: scripts from this origin and the page's own
    inline scripts (by hash), styles from this origin, images from this origin and data:
    URLs (Swagger UI's icons), requests to this origin (the OpenAPI document, "Try it
    out")."""
    html = bytes(page.body).decode("utf-8")
    script_src = ["'self'"] + [
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in _INLINE_SCRIPT.findall(html)
    ]
    page.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src {' '.join(script_src)}; "
        "style-src 'self'; img-src 'self' data:; font-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'self'"
    )
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page
