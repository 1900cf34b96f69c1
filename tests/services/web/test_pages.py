"""The shared page code: the vendored front-end files are the npm registry's, unchanged (SHA-256 against
vendor.json); a rendered page loads only the package's own files, escapes what it is given and keeps its
config JSON from closing the script element; the static files are served."""

from __future__ import annotations

import hashlib
import json
import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.web import pages

VENDOR_DIR = pages.STATIC_DIR / "vendor"


def test_vendored_files_match_their_manifest() -> None:
    manifest = json.loads((VENDOR_DIR / "vendor.json").read_text())
    listed = set()
    for pkg in manifest["packages"]:
        assert pkg["dir"] == f"{pkg['name']}-{pkg['version']}"
        for name, sha in pkg["files"].items():
            path = VENDOR_DIR / pkg["dir"] / name
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, path
            listed.add(path)
        assert pkg["npm_integrity"].startswith("sha512-")
    on_disk = {p for p in VENDOR_DIR.rglob("*") if p.is_file() and p.name != "vendor.json"}
    assert on_disk == listed
    # Every vendored URL a page can ask for exists.
    for urls in pages.VENDOR.values():
        for url in urls:
            assert (pages.STATIC_DIR / url.removeprefix(pages.STATIC_URL + "/")).is_file(), url


def test_render_escapes_and_uses_only_own_files() -> None:
    resp = pages.render(
        title="<b>x</b>",
        body="<p id=body></p>",
        vendor=["uplot"],
        nav=[("Jobs & plans", "/jobs")],
        config={"evil": "</script><script>alert(1)</script>"},
    )
    text = bytes(resp.body).decode()
    assert "<title>&lt;b&gt;x&lt;/b&gt; · BRL</title>" in text
    assert "Jobs &amp; plans" in text and "<p id=body></p>" in text
    assert "</script><script>alert(1)" not in text
    config = re.search(r'<script type="application/json" id="brl-config">(.*?)</script>', text, re.S)
    assert config is not None and json.loads(config.group(1))["evil"].startswith("</script>")
    for src in re.findall(r'(?:src|href)="([^"]+)"', text):
        assert not src.startswith(("http:", "https:", "//")), src  # nothing from another origin
    assert "default-src 'self'" in resp.headers["content-security-policy"]
    assert text.index("uPlot.iife.min.js") < text.index("brl.js")


def test_mount_serves_the_static_files_once() -> None:
    app = FastAPI()
    pages.mount(app)
    pages.mount(app)  # a second call adds nothing
    assert sum(getattr(r, "path", "") == pages.STATIC_URL for r in app.routes) == 1
    with TestClient(app) as client:
        r = client.get(f"{pages.STATIC_URL}/brl.js")
        assert r.status_code == 200 and "sessionStorage" in r.text
        assert client.get(f"{pages.STATIC_URL}/../pages.py").status_code == 404
