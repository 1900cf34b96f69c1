"""Headless Chromium for page tests: Debian's `chromium` driven through Playwright (its own browser download
is never used), with the page's JS errors collected and screenshots kept as test artifacts.

Use it like this (the coordinator's dashboard tests and the planner/simulator page tests do):

    from tests.browser import Chromium

    @pytest.fixture(scope="module")
    def chrome() -> Iterator[Chromium]:
        with Chromium() as c:              # one browser per module; fails (no skip) if chromium is missing
            yield c

    def test_page(chrome: Chromium, tmp_path: Path) -> None:
        with chrome.page(tmp_path) as page:            # a fresh context at 1280x800: empty sessionStorage
            page.goto(f"{url}/dashboard")
            page.login("the-key")                       # the shared login form of services/web; waits for data
            page.wait_for("document.querySelectorAll('[data-node]').length >= 2", timeout_s=10)
            assert page.text("#status") == "ok"
            page.screenshot("dashboard")                # tmp_path/dashboard.png, and $BRL_TEST_ARTIFACTS/...
        # leaving the block fails the test if the page threw or logged a console error

`page.pw` is the Playwright `Page` for anything else (locators, clicks, `evaluate`). Waits poll the DOM up
to a deadline and fail with the last value seen; they never measure speed. Sync API only: call it from
plain (not async) tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from playwright.sync_api import Browser, ConsoleMessage, Error, Page, Playwright, sync_playwright

VIEWPORT = {"width": 1280, "height": 800}
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# Where CI (or a developer) wants screenshots kept after the tmp dirs are gone.
ARTIFACTS_ENV = "BRL_TEST_ARTIFACTS"


def chromium_path() -> str:
    """The system Chromium: $BRL_CHROMIUM, else Debian's. A missing browser is a failed test, not a skip:
    `.ci/run` installs it (`apt-get install chromium`)."""
    candidates = [os.environ.get("BRL_CHROMIUM", ""), *CHROMIUM_PATHS]
    for path in candidates:
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    raise RuntimeError(
        "no Chromium found (looked at $BRL_CHROMIUM and /usr/bin/chromium): run `apt-get install chromium`"
    )


class BrowserPage:
    """One tab of a fresh browser context, with its JS errors and console errors recorded."""

    def __init__(self, pw_page: Page, artifacts_dir: Path) -> None:
        self.pw = pw_page
        self.artifacts_dir = artifacts_dir
        self.errors: list[str] = []
        pw_page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        pw_page.on("console", self._console)

    def _console(self, msg: ConsoleMessage) -> None:
        # A 401 while logged out is the page working as meant: the browser logs failed fetches itself.
        if msg.type == "error" and "401" not in msg.text:
            self.errors.append(f"console error: {msg.text}")

    def goto(self, url: str) -> None:
        if re.search(r"[?&](key|api_key|token)=", url):
            raise ValueError(f"never put a key in a URL: {url}")
        self.pw.goto(url, wait_until="load")

    def login(self, key: str, timeout_s: float = 10.0, *, expect_ok: bool = True) -> None:
        """Fills the shared login form (services/web: `form#brl-login`) and, when `expect_ok`, waits until
        the page's data loads (`#brl-status` says live). A refused key shows the form again with
        `#brl-login-error`."""
        self.pw.wait_for_selector("form#brl-login", state="visible", timeout=timeout_s * 1000)
        self.pw.fill("form#brl-login input[name=key]", key)
        self.pw.click("form#brl-login button[type=submit]")
        if expect_ok:
            self.wait_for(
                "document.getElementById('brl-login').hidden && "
                "document.getElementById('brl-status').dataset.state === 'ok'",
                timeout_s=timeout_s,
            )

    def logged_out(self) -> bool:
        """The login form is showing."""
        return bool(self.pw.is_visible("form#brl-login"))

    def evaluate(self, js: str) -> Any:
        return self.pw.evaluate(js)

    def wait_for(self, js: str, timeout_s: float = 10.0, poll_s: float = 0.1) -> Any:
        """Polls the JS expression `js` until it is truthy and returns its value; fails with the last value
        seen at the deadline."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while True:
            try:
                last = self.pw.evaluate(js)
            except Error as exc:  # the page navigated or the expression threw: try again until the deadline
                last = f"<{exc.message.splitlines()[0]}>"
            else:
                if last:
                    return last
            if time.monotonic() >= deadline:
                raise AssertionError(f"{js!r} still falsy after {timeout_s} s; last value: {last!r}")
            time.sleep(poll_s)

    def text(self, selector: str) -> str:
        """The text of the first element matching `selector` ('' when there is none)."""
        found = self.pw.query_selector(selector)
        return "" if found is None else found.inner_text().strip()

    def texts(self, selector: str) -> list[str]:
        return [e.inner_text().strip() for e in self.pw.query_selector_all(selector)]

    def data(self, selector: str) -> list[dict[str, str]]:
        """The `data-*` attributes of every element matching `selector` (the pages tag what they draw)."""
        found = self.pw.evaluate(
            "s => Array.from(document.querySelectorAll(s)).map(e => Object.assign({}, e.dataset))", selector
        )
        return list(found)

    def fetch_json(self, path: str, key: str | None = None) -> tuple[int, Any]:
        """GET `path` from inside the page (same origin), with the key as a Bearer header when given."""
        result = self.pw.evaluate(
            """async ([path, key]) => {
                const r = await fetch(path, {headers: key ? {Authorization: 'Bearer ' + key} : {}});
                const body = await r.text();
                return [r.status, body];
            }""",
            [path, key],
        )
        status, body = result
        try:
            return int(status), json.loads(body)
        except ValueError:
            return int(status), body

    def screenshot(self, name: str, *, full_page: bool = False) -> Path:
        """Saves `name`.png in the test's artifacts dir, and a copy under $BRL_TEST_ARTIFACTS when set."""
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        path = self.artifacts_dir / f"{name}.png"
        self.pw.screenshot(path=str(path), full_page=full_page)
        keep = os.environ.get(ARTIFACTS_ENV)
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(keep) / path.name)
        return path

    def assert_no_js_errors(self) -> None:
        if self.errors:
            raise AssertionError("the page reported errors:\n" + "\n".join(self.errors))


class Chromium:
    """Headless system Chromium through Playwright; a context manager (one per test module is plenty)."""

    def __init__(self, *, executable_path: str | None = None) -> None:
        self.executable_path = executable_path or chromium_path()
        self._pw: Playwright | None = None
        self._browser: Browser | None = None

    def __enter__(self) -> Chromium:
        self._pw = sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(
                executable_path=self.executable_path,
                headless=True,
                # As root in CI containers Chromium refuses its sandbox; /dev/shm is small in containers.
                args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
            )
        except BaseException:
            self._pw.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._pw is not None:
            self._pw.stop()

    @contextmanager
    def page(
        self, artifacts_dir: Path, *, viewport: dict[str, int] | None = None, check_errors: bool = True
    ) -> Iterator[BrowserPage]:
        """A tab in a fresh context (nothing shared with other tests: no sessionStorage, no cookies). On
        leaving, a failed test gets a `failure.png`; a passing one fails if the page reported JS errors."""
        if self._browser is None:
            raise RuntimeError("use Chromium as a context manager: `with Chromium() as chrome:`")
        context = self._browser.new_context(viewport=viewport or VIEWPORT)  # type: ignore[arg-type]
        page = BrowserPage(context.new_page(), artifacts_dir)
        try:
            yield page
        except BaseException:
            try:
                page.screenshot("failure")
            except Error:
                pass
            raise
        else:
            if check_errors:
                page.assert_no_js_errors()
        finally:
            context.close()
