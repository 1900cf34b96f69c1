"""Serve BRL's web pages from a FastAPI app: `mount(app)` adds the shared static files under STATIC_URL,
`render(...)` fills the base template. Pages carry no data: they fetch JSON routes with the API key in an
`Authorization` header (kept in sessionStorage by static/brl.js), so a page itself needs no key and no key
ever travels in a URL."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from string import Template

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
STATIC_URL = "/static/brl"
# Vendored libraries, by the names pages ask for (see static/vendor/vendor.json).
VENDOR = {
    "uplot": (
        f"{STATIC_URL}/vendor/uplot-1.6.32/uPlot.iife.min.js",
        f"{STATIC_URL}/vendor/uplot-1.6.32/uPlot.min.css",
    ),
}
# No inline scripts, nothing from other origins: a page can only run the package's own files.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def mount(app: FastAPI) -> None:
    """Serves static/ at STATIC_URL (once per app; excluded from the OpenAPI schema)."""
    if not any(getattr(r, "path", None) == STATIC_URL for r in app.routes):
        app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="brl-static")


def render(
    *,
    title: str,
    body: str,
    scripts: Sequence[str] = (),
    styles: Sequence[str] = (),
    vendor: Sequence[str] = (),
    nav: Sequence[tuple[str, str]] = (),
    config: dict[str, object] | None = None,
) -> HTMLResponse:
    """A page from the base template. `body`: trusted HTML of the page's own layout (no data in it);
    `scripts`/`styles`: URLs (usually under STATIC_URL), loaded after brl.js; `vendor`: keys of VENDOR;
    `nav`: (label, href) links in the header; `config`: JSON the page's script reads with `brl.config()`."""
    vendor_js = [VENDOR[v][0] for v in vendor]
    vendor_css = [VENDOR[v][1] for v in vendor]
    css = [*vendor_css, f"{STATIC_URL}/brl.css", *styles]
    js = [*vendor_js, f"{STATIC_URL}/brl.js", *scripts]
    page = TEMPLATE.substitute(
        title=html.escape(title),
        styles="\n".join(f'<link rel="stylesheet" href="{html.escape(u)}">' for u in css),
        scripts="\n".join(f'<script src="{html.escape(u)}" defer></script>' for u in js),
        nav="".join(f'<a href="{html.escape(href)}">{html.escape(label)}</a>' for label, href in nav),
        # JSON in a non-executed script element; `<` is escaped so no value can close the element.
        config=json.dumps(config or {}).replace("<", "\\u003c"),
        body=body,
    )
    return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})


TEMPLATE = Template((HERE / "templates" / "base.html").read_text(encoding="utf-8"))
