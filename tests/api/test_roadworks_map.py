"""The public roadworks map in a real headless Chromium: the page loads in German, lists
and draws the works of the chosen days, the date filter and the street search change the
set, and the keyboard opens a work's details (what, who, until when, detour, contact).

The API runs in uvicorn on a free loopback port over the demo data (seeded for SEED_DAY,
the app's clock at SEED_DAY 08:00). No base-map tiles are configured and the browser has
no network: the page must work without them. Needs Debian's `chromium` and
`chromedriver` in /usr/bin (installed by `make test`); skipped with the reason when absent.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from cityops.api.app import create_app
from cityops.api.roadworks.context import roadworks_api
from cityops.ingest.db import connect
from cityops.roadworks.feeds.common import FeedContext
from cityops.roadworks.labels import BERLIN
from cityops.roadworks.model import Category
from cityops.roadworks.overview import publish_daily
from cityops.roadworks.seed import SeedReport, seed_demo
from cityops.routing.network import load_network
from tests.api.test_roadworks_api import api_settings, clone, roadworks_context
from tests.roadworks.conftest import SEED_DAY
from tests.roadworks.factories import PROMOTER, Clock, make_spec, service
from tests.support.servers import serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 20.0

pytestmark = pytest.mark.slow

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(f"the map's browser test needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages "
                "chromium and chromium-driver; `make test` installs them)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def seeded(template_db: str) -> Iterator[tuple[str, SeedReport]]:
    with clone(template_db) as url:
        with connect(url, autocommit=True) as conn:
            report = seed_demo(conn, service(), load_network(), SEED_DAY)
        yield url, report


@pytest.fixture(scope="module")
def server(seeded: tuple[str, SeedReport]) -> Iterator[str]:
    """The API in uvicorn on a free loopback port; yields its base URL."""
    app = create_app(api_settings(seeded[0]), db_timeout_s=5.0)
    ctx = roadworks_context()
    app.dependency_overrides[roadworks_api] = lambda: ctx
    with serving(app, wait_s=WAIT_S) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1280,900", "--lang=de-DE",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


# -- helpers ---------------------------------------------------------------------------------


def api_total(base: str, **params: str) -> list[str]:
    """References the public API returns for a search (the page must show the same)."""
    query = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in params.items())
    with urllib.request.urlopen(f"{base}/api/v1/roadworks?limit=500&{query}",
                                timeout=WAIT_S) as r:
        return [w["reference"] for w in json.load(r)["items"]]


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(
        condition, message=f"timed out waiting for {what}")


def listed(driver: WebDriver) -> list[str]:
    return [str(li.get_attribute("data-reference"))
            for li in driver.find_elements(By.CSS_SELECTOR, "#liste li.werk")]


def wait_for_list(driver: WebDriver, want: list[str]) -> None:
    """Until the list is loaded and shows exactly `want`, in that order."""
    def ready(d: WebDriver) -> bool:
        state = d.find_element(By.ID, "liste").get_attribute("data-state")
        return state == "ready" and listed(d) == want
    try:
        wait(driver, ready, f"the list to show {want}")
    except Exception:
        status = driver.find_element(By.ID, "status").text
        raise AssertionError(f"list {listed(driver)}, status {status!r}, want {want}") from None


def shapes(driver: WebDriver) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, "#karte path.werk-form"))


def active(driver: WebDriver) -> WebElement:
    return driver.switch_to.active_element


def detail_text(driver: WebDriver, name: str) -> str:
    return str(driver.find_element(By.ID, f"detail-{name}").text)


def day(offset: int) -> str:
    return (SEED_DAY + timedelta(days=offset)).isoformat()


def severe_console_messages(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


# -- the test ----------------------------------------------------------------------------------


def test_map_lists_filters_and_opens_details_with_the_keyboard(
    server: str, browser: WebDriver
) -> None:
    d = browser
    d.get(f"{server}/roadworks")
    assert d.title.startswith("Baustellenkarte")
    assert d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "de"

    # today: one list entry and one shape per work on site, no base map tiles
    today = api_total(server, **{"from": day(0), "to": day(0)})
    assert len(today) >= 5
    wait_for_list(d, today)
    assert shapes(d) == len(today)
    assert "1 Baustelle" not in d.find_element(By.ID, "status").text
    assert d.find_element(By.ID, "status").text.startswith(f"{len(today)} Baustellen am 03.03.2025")
    assert not d.find_elements(By.CSS_SELECTOR, "img.leaflet-tile")
    assert "ohne-kacheln" in str(d.find_element(By.ID, "karte").get_attribute("class"))

    # the date filter: the next three months hold more works
    d.find_element(By.CSS_SELECTOR, "label[for=zeitraum-3monate]").click()
    months = api_total(server, **{"from": day(0), "to": "2025-06-02"})
    assert len(months) > len(today)
    wait_for_list(d, months)
    assert shapes(d) == len(months)
    d.find_element(By.CSS_SELECTOR, "label[for=zeitraum-2wochen]").click()
    weeks = api_total(server, **{"from": day(0), "to": day(13)})
    wait_for_list(d, weeks)
    assert set(today) <= set(weeks) <= set(months) and weeks != months

    # the street search
    search = d.find_element(By.ID, "suche")
    search.send_keys("Unioninkatu", Keys.ENTER)
    unionin = api_total(server, **{"from": day(0), "to": day(13), "q": "Unioninkatu"})
    assert len(unionin) == 2
    wait_for_list(d, unionin)
    assert shapes(d) == 2
    assert all("Unioninkatu" in li.text for li in d.find_elements(By.CSS_SELECTOR, "li.werk"))

    # keyboard only: from the search field Tab to the first work, Enter opens its details
    search.clear()
    search.send_keys("Pohjoisesplanadi", Keys.ENTER)
    (closure,) = api_total(server, **{"from": day(0), "to": day(13), "q": "Pohjoisesplanadi"})
    wait_for_list(d, [closure])
    search = d.find_element(By.ID, "suche")
    search.click()
    for _ in range(6):
        active(d).send_keys(Keys.TAB)
        if "werk-knopf" in str(active(d).get_attribute("class")):
            break
    button = active(d)
    assert "werk-knopf" in str(button.get_attribute("class")), "Tab did not reach the list"
    button.send_keys(Keys.ENTER)
    wait(d, lambda x: x.find_element(By.ID, "detail").is_displayed(), "the detail panel")
    wait(d, lambda x: x.switch_to.active_element.get_attribute("id") == "detail-titel",
         "the focus on the detail's heading")
    assert detail_text(d, "titel") == "Fahrbahndeckenerneuerung"
    assert detail_text(d, "einfluss") == "Vollsperrung"
    assert detail_text(d, "was") == "Die Fahrbahn erhält eine neue Asphaltdecke. Vollsperrung."
    assert detail_text(d, "wer").startswith("Tiefbauamt – Straßenbau (Straßenbau)")
    assert "Straßenbau Becker KG" in detail_text(d, "wer")
    assert detail_text(d, "bis").startswith("voraussichtlich bis 19.03.2025, 17:00 Uhr")
    assert detail_text(d, "umleitung") == "Umleitung über Aleksanterinkatu und Unioninkatu"
    assert detail_text(d, "kontakt") == "strassenbau@stadt.example"
    assert detail_text(d, "nummer") == closure
    assert d.find_elements(By.CSS_SELECTOR, "#karte path.werk-umleitung")  # detour drawn
    assert d.current_url.endswith(f"/roadworks/{closure}")

    # Escape closes the panel and gives the focus back to the work in the list
    active(d).send_keys(Keys.ESCAPE)
    wait(d, lambda x: not x.find_element(By.ID, "detail").is_displayed(), "the panel to close")
    assert active(d).get_attribute("class") == "werk-knopf"

    # a work's public page (as the feeds link it) opens with its details
    d.get(f"{server}/roadworks/{today[0]}")
    wait(d, lambda x: x.find_element(By.ID, "detail").is_displayed(), "the work's details")
    wait(d, lambda x: x.find_element(By.ID, "detail-nummer").text == today[0], "its reference")
    assert detail_text(d, "kontakt") and detail_text(d, "bis")

    assert severe_console_messages(d) == []


# -- hostile text from an editor (issue 14) -------------------------------------------------

HOSTILE = {
    "title": 'Gasleck <b id="pwn-title">fett</b><img src="x" id="pwn-img">',
    "street": "<style>body { background: rgb(255, 0, 0) }</style>Angriffsweg",
    "public_text": '<a id="pwn-link" href="https://phish.example">Hier klicken</a>',
    "contractor": "<script>document.title = 'pwned'</script>Bau GmbH",
}
MARKUP_IDS = ("pwn-title", "pwn-img", "pwn-link")


def _markup_rendered(d: WebDriver) -> list[str]:
    """What of the hostile text became elements or styles instead of text."""
    found = [i for i in MARKUP_IDS if d.find_elements(By.ID, i)]
    background = d.execute_script(
        "return getComputedStyle(document.body).backgroundColor"
    )
    if background == "rgb(255, 0, 0)":
        found.append("style")
    if d.title == "pwned":
        found.append("script")
    return found


def test_text_from_a_work_reaches_the_pages_only_as_text(
    seeded: tuple[str, SeedReport], server: str, browser: WebDriver, tmp_path: Path
) -> None:
    url, _ = seeded
    start = datetime.combine(SEED_DAY, time(6), BERLIN)
    spec = make_spec(
        street=HOSTILE["street"], start=start, days=2, category=Category.EMERGENCY,
        title=HOSTILE["title"], public_text=HOSTILE["public_text"],
        contractor=HOSTILE["contractor"], y=400.0,
    )
    svc = service(Clock(start + timedelta(hours=1)))
    with connect(url, autocommit=True) as conn:
        work = svc.create(conn, spec, PROMOTER)
        work = svc.report_start(conn, work.id, PROMOTER, at=start)
        publish_daily(
            conn, SEED_DAY, tmp_path,
            FeedContext(generated_at=start, publisher="Stadt Test",
                        contact_email="baustellen@example.org", base_url=server),
        )

    d = browser
    # the list, the tooltip on the map and the detail panel
    d.get(f"{server}/roadworks")
    search = wait(d, lambda x: x.find_element(By.ID, "suche"), "the search field")
    search.send_keys("Angriffsweg", Keys.ENTER)
    wait_for_list(d, [work.reference])
    item = d.find_element(By.CSS_SELECTOR, "#liste li.werk")
    assert "<b id=" in item.text or "Angriffsweg" in item.text
    shape = d.find_element(By.CSS_SELECTOR, "#karte path.werk-form")

    def hovered(x: WebDriver) -> Any:
        # the pointer over the shape, as Leaflet hears it (a real mouse move can miss a
        # shape that the map is still moving on a busy machine)
        x.execute_script(
            "const r = arguments[0].getBoundingClientRect();"
            "arguments[0].dispatchEvent(new MouseEvent('mouseover', {bubbles: true,"
            " clientX: r.x + r.width / 2, clientY: r.y + r.height / 2}));",
            shape,
        )
        return x.find_elements(By.CSS_SELECTOR, ".leaflet-tooltip")

    (tooltip,) = wait(d, hovered, "the tooltip")
    shown = str(tooltip.get_attribute("textContent"))  # also while it fades in
    assert '<b id="pwn-title">' in shown and "<style>" in shown, shown
    item.find_element(By.CSS_SELECTOR, "button").click()
    wait(d, lambda x: x.find_element(By.ID, "detail").is_displayed(), "the detail panel")
    assert detail_text(d, "titel") == HOSTILE["title"]
    assert '<a id="pwn-link"' in detail_text(d, "was")
    assert "<script>" in detail_text(d, "wer")
    assert _markup_rendered(d) == []

    # the daily overview that was published with it
    with urllib.request.urlopen(f"{server}/api/v1/roadworks/overview", timeout=WAIT_S) as r:
        day_url = json.load(r)[0]["html"]
    d.get(f"{server}{day_url}")
    wait(d, lambda x: "Baustellenübersicht" in x.title, "the daily overview")
    assert HOSTILE["title"] in d.find_element(By.TAG_NAME, "body").text
    assert _markup_rendered(d) == []
    assert not [m for m in severe_console_messages(d) if "Content Security Policy" in m]
