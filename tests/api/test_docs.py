"""The documentation page (/docs) loads nothing from another host: its script, style and
favicon come from the app (/static/docs), and a real headless Chromium renders Swagger UI
under the page's Content-Security-Policy without a request to another host.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from cityops.api.app import create_app
from cityops.api.docs import DOCS_ASSETS_DIR, DOCS_STATIC_PATH
from cityops.ingest.config import Settings
from tests.api.testclient import TestClient
from tests.support.servers import serving

PAGES = ("/docs", "/docs/oauth2-redirect")
# src= and href= in the page, and the url: Swagger UI is told to load
_URL = re.compile(r"""(?:src|href)=["']([^"']+)["']|\burl:\s*'([^']+)'""")
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 30.0


def _urls(html: str) -> list[str]:
    return [a or b for a, b in _URL.findall(html)]


def _policy(header: str) -> dict[str, list[str]]:
    out = {}
    for part in header.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


@pytest.mark.parametrize("page", PAGES)
def test_docs_pages_name_no_other_host(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "cdn" not in html.lower()
    assert "fonts.googleapis" not in html
    assert not re.search(r"https?://", html), "the page names a URL with a host"
    for url in _urls(html):
        assert urlsplit(url).netloc == "", url
        assert url.startswith("/"), url


def test_docs_assets_are_served_by_the_app(client: TestClient) -> None:
    html = client.get("/docs").text
    local = {u for u in _urls(html) if u.startswith(f"{DOCS_STATIC_PATH}/")}
    assert {u.rsplit("/", 1)[-1] for u in local} == {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "favicon.png",
    }
    kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for url in sorted(local):
        r = client.get(url)
        assert r.status_code == 200, url
        assert r.headers["content-type"].split(";")[0] == kinds[Path(url).suffix], url
        assert r.content == (DOCS_ASSETS_DIR / Path(url).name).read_bytes()
    assert "SwaggerUIBundle" in client.get(f"{DOCS_STATIC_PATH}/swagger-ui-bundle.js").text


def test_swagger_ui_renders_openapi_3_1(client: TestClient) -> None:
    """FastAPI writes OpenAPI 3.1, which Swagger UI shows from version 5 on."""
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    bundle = client.get(f"{DOCS_STATIC_PATH}/swagger-ui-bundle.js").text
    version = re.search(r'PACKAGE_VERSION:"(\d+)\.', bundle)
    assert version is not None and int(version.group(1)) >= 5


def test_swagger_ui_asks_no_online_validator(client: TestClient) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text


def test_redoc_is_not_offered(client: TestClient) -> None:
    """ReDoc's bundle loads its vendor's logo from the vendor's CDN, whatever the page says."""
    assert client.get("/redoc").status_code == 404


@pytest.mark.parametrize("page", PAGES)
def test_docs_policy_allows_own_origin_and_own_inline_scripts_only(
    client: TestClient, page: str
) -> None:
    r = client.get(page)
    policy = _policy(r.headers["content-security-policy"])
    assert policy["default-src"] == ["'none'"]
    inline = [
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in _INLINE_SCRIPT.findall(r.text)
    ]
    assert policy["script-src"] == ["'self'", *inline]
    assert policy["connect-src"] == ["'self'"]
    for values in policy.values():
        assert not any(v.startswith(("http", "*")) or v == "'unsafe-eval'" for v in values)
    assert r.headers["x-content-type-options"] == "nosniff"


# -- in a browser ------------------------------------------------------------------------


@pytest.fixture
def server(auth_settings: Settings) -> Iterator[str]:
    with serving(create_app(auth_settings, db_timeout_s=5.0), wait_s=WAIT_S) as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian chromium, chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
def test_swagger_ui_renders_in_a_browser_from_this_origin_only(server: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server}/docs")
    # the title and the operations of the OpenAPI document
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock")) > 10,
        message="/docs did not render the API's operations",
    )
    title = browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    assert title.startswith("cityops API")
    # open the first operation: its parameters and responses render (with their examples)
    browser.find_element(By.CSS_SELECTOR, ".swagger-ui .opblock-summary").click()
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock-body .responses-table"),
        message="an operation of /docs did not open",
    )
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    origin = f"{urlsplit(server).netloc}"
    foreign = [
        u
        for u in loaded
        if urlsplit(u).scheme in ("http", "https") and urlsplit(u).netloc != origin
    ]
    assert not foreign, f"/docs loaded {foreign}"
    assert any(u.endswith("/openapi.json") for u in loaded)
    # a request the policy refused would be logged here
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
