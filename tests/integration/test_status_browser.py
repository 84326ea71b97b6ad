"""The status page in a real browser: a running daemon, headless Chromium driven by Selenium.

The page shows the district groups, the filter box narrows the list to one school as one
types (Kazakh letters included), and the school's link opens its page. Screenshots of each
step are saved under the test's tmp_path; with TELEMETRYD_ARTIFACTS set they are copied
there too, and with UPDATE_DOCS_SCREENSHOTS=1 the city page's one replaces
docs/status-page.png (the README's picture).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import require_binary
from tests.daemon_process import DaemonProcess
from tests.helpers import write_config

pytestmark = pytest.mark.integration

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (a dev dependency)")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "status-page.png"

SCHOOLS: list[dict[str, Any]] = [
    {
        "id": "shym-012",
        "name": "Школа-гимназия № 12 имени Абая",
        "district": "Абайский район",
        "devices": [
            {"id": "shym-012-router", "kind": "router", "host": "127.0.0.1"},
            {"id": "shym-012-cam-1", "kind": "camera", "host": "127.0.0.2", "name": "Вход, восток"},
            {"id": "shym-012-cam-2", "kind": "camera", "host": "127.0.0.3", "name": "Спортзал"},
            {"id": "shym-012-nvr", "kind": "nvr", "host": "127.0.0.4"},
        ],
    },
    {
        "id": "shym-045",
        "name": "№ 45 Әл-Фараби атындағы мектеп-лицей",
        "district": "Абайский район",
        "devices": [
            {"id": "shym-045-router", "kind": "router", "host": "127.0.0.5"},
            {"id": "shym-045-panel", "kind": "alarm_panel", "host": "127.0.0.6"},
        ],
    },
    {
        "id": "shym-107",
        "name": "Жалпы орта білім беретін № 107 мектеп",
        "district": "Қаратау ауданы",
        "devices": [
            {"id": "shym-107-router", "kind": "router", "host": "127.0.0.7"},
            {"id": "shym-107-cam-1", "kind": "camera", "host": "127.0.0.8", "name": "Дәліз"},
        ],
    },
    {
        "id": "shym-110",
        "name": "Ғ. Мұратбаев атындағы № 110 мектеп-гимназия",
        "district": "Қаратау ауданы",
        "devices": [{"id": "shym-110-router", "kind": "router", "host": "127.0.0.9"}],
    },
]


def _browser(profile: Path) -> WebDriver:
    """Debian's headless Chromium through its chromedriver, with a throw-away profile; skips when either is missing."""
    chromium = require_binary("chromium", "chromium")
    chromedriver = require_binary("chromedriver", "chromium-driver")
    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager stays quiet: the driver is given
    options = Options()
    options.binary_location = chromium
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,900",
        "--lang=en-US",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(chromedriver), options=options)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium, always quit (it and its chromedriver are this test's own processes)."""
    driver = _browser(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot(driver: WebDriver, tmp_path: Path, name: str) -> Path:
    """Save the page as tmp_path/<name>.png, and into $TELEMETRYD_ARTIFACTS when set."""
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    assert path.stat().st_size > 10_000, "an empty screenshot"
    artifacts = os.environ.get("TELEMETRYD_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / path.name)
    return path


def _shown_schools(driver: WebDriver) -> list[str]:
    return [
        row.get_attribute("data-school") or ""
        for row in driver.find_elements(By.CSS_SELECTOR, "tr.school")
        if row.is_displayed()
    ]


def test_status_page_groups_filters_and_opens_a_school(tmp_path: Path, browser: WebDriver) -> None:
    """In Chromium: both districts shown, typing Kazakh letters narrows to one school, its link opens its page."""
    config = write_config(tmp_path, SCHOOLS, probes={"icmp": {"interval": 1}, "tcp": {"interval": 1, "timeout": 1}})
    with DaemonProcess(config, tee=tmp_path / "daemon.log") as daemon:
        address = daemon.address
        wait = WebDriverWait(browser, 15)
        browser.get(f"http://{address}/status")
        # The first results decide at once: refresh until every device has one (cameras' RTSP found closed).
        wait.until(lambda d: "0 not yet probed" in d.find_element(By.TAG_NAME, "body").text or d.refresh())
        assert browser.find_elements(By.CSS_SELECTOR, 'tr.school.problem[data-school="shym-012"]')
        districts = [
            s.get_attribute("data-district") for s in browser.find_elements(By.CSS_SELECTOR, "section.district")
        ]
        assert districts == ["Абайский район", "Қаратау ауданы"]
        headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "section.district h2")]
        assert headings[0].startswith("Абайский район") and headings[1].startswith("Қаратау ауданы")
        assert sorted(_shown_schools(browser)) == ["shym-012", "shym-045", "shym-107", "shym-110"]
        city = _screenshot(browser, tmp_path, "status-city")
        if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
            shutil.copy(city, DOCS_SCREENSHOT)

        box = browser.find_element(By.ID, "filter")
        box.send_keys("мұратбаев")  # lower case of a capitalised Kazakh name
        wait.until(lambda d: _shown_schools(d) == ["shym-110"])
        sections = browser.find_elements(By.CSS_SELECTOR, "section.district")
        assert [s.is_displayed() for s in sections] == [False, True]
        assert browser.find_element(By.ID, "shown").text == "1"
        assert parse_qs(urlsplit(browser.current_url).query) == {"q": ["мұратбаев"]}
        _screenshot(browser, tmp_path, "status-filtered")
        browser.refresh()  # what the auto-refresh does: the filter is in the address, the server applies it
        assert _shown_schools(browser) == ["shym-110"]
        assert browser.find_element(By.ID, "filter").get_attribute("value") == "мұратбаев"

        browser.find_element(By.CSS_SELECTOR, 'tr.school[data-school="shym-110"] a.school-link').click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "h1#school"))
        assert browser.current_url == f"http://{address}/status/school/shym-110"
        assert browser.find_element(By.ID, "school").get_attribute("data-school") == "shym-110"
        assert "Ғ. Мұратбаев атындағы № 110 мектеп-гимназия" in browser.find_element(By.ID, "school").text
        devices = [row.get_attribute("data-device") for row in browser.find_elements(By.CSS_SELECTOR, "tr.device")]
        assert devices == ["shym-110-router"]
        assert "Asia/Almaty (UTC+05:00)" in browser.find_element(By.TAG_NAME, "body").text
        _screenshot(browser, tmp_path, "status-school")

        browser.get(f"http://{address}/status?problems=1")  # the same view without typing: the query parameter
        rows = browser.find_elements(By.CSS_SELECTOR, "tr.school")
        problems = [r.get_attribute("data-school") for r in rows if "problem" in (r.get_attribute("class") or "")]
        assert "shym-012" in problems and _shown_schools(browser) == problems
        assert browser.find_element(By.ID, "problems").is_selected()
        browser.find_element(By.ID, "problems").click()  # unticked in the page: every school again, no request
        wait.until(lambda d: len(_shown_schools(d)) == len(SCHOOLS))
        assert "problems" not in parse_qs(urlsplit(browser.current_url).query)
        browser.find_element(By.ID, "problems").click()
        wait.until(lambda d: _shown_schools(d) == problems)
        assert parse_qs(urlsplit(browser.current_url).query) == {"problems": ["1"]}
