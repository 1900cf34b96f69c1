"""The dashboard's sign-in in headless Chromium (fake fleet, API key set): without a key the data answers
401 and the page shows the login form; a wrong key is refused; the right key is kept in sessionStorage,
sent as a header and never put in the URL; signing out forgets it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import Chromium
from tests.services.coordinator.fakeserver import serve_fake

KEY = "dash-key"


@pytest.fixture(scope="module")
def chrome() -> Iterator[Chromium]:
    with Chromium() as c:
        yield c


def test_login_with_the_key_in_a_header(chrome: Chromium, tmp_path: Path) -> None:
    with serve_fake({"a": (0, 2), "b": (2, 4)}, api_key=KEY) as srv, chrome.page(tmp_path) as page:
        page.goto(f"{srv.root_url}/dashboard")
        page.wait_for("!document.getElementById('brl-login').hidden", timeout_s=10)
        assert page.pw.is_hidden("#brl-main")
        assert page.fetch_json("/v1/dashboard/state")[0] == 401
        assert page.data("tr[data-node]") == []
        page.screenshot("dashboard-login")

        page.login("not-the-key", expect_ok=False)
        page.wait_for(
            "document.getElementById('brl-login-error').textContent.includes('refused')", timeout_s=10
        )
        assert not page.pw.is_hidden("form#brl-login")

        page.login(KEY)
        page.wait_for("document.querySelectorAll('tr[data-node]').length === 2", timeout_s=10)
        assert not page.logged_out()
        assert KEY not in page.pw.url
        assert page.evaluate("sessionStorage.getItem('brl.apiKey')") == KEY
        assert page.fetch_json("/v1/dashboard/state", KEY)[0] == 200

        page.pw.click("#brl-logout")
        page.wait_for("!document.getElementById('brl-login').hidden", timeout_s=5)
        assert page.evaluate("sessionStorage.getItem('brl.apiKey')") is None
