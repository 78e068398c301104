"""The review app in a real browser: Debian's headless Chromium driven by Selenium (chromedriver).

Filter the table, mark a record incorrect, correct another through the form, see a wrong value refused
with the validator's message, review with a keyboard shortcut, reload and find it all saved; the
analytics page draws its plots. A full-page screenshot of each page goes to tests/artifacts/review/
(gitignored; CI keeps it as an artifact).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.review_project import ROOT, SCRIPT_TITLE, free_port, make_project, start_server, stop_server

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts" / "review"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000"]


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="distill-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def server(tmp_path):
    make_project(tmp_path)
    port = free_port()
    proc = start_server(tmp_path, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(height + 40, 600), 8000))
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    driver.set_window_size(1400, 1000)
    return path


def _table_ids(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [tr.get_attribute("data-id") for tr in driver.find_elements(By.CSS_SELECTOR, "#records tbody tr")]


def navigate(driver, action) -> None:
    """Do what loads a new page (a click, a key), and wait until the new page has replaced the old one."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    action()
    WebDriverWait(driver, 15).until(expected_conditions.staleness_of(old))
    WebDriverWait(driver, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _stored(base: str) -> dict[str, dict]:
    return {r["id"]: r for r in httpx.get(f"{base}/api/reviews").json()}


def test_review_in_the_browser_persists_and_refuses_invalid_answers(browser, server):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(f"{server}/records")
    assert len(_table_ids(d)) == 9
    screenshot(d, "records")

    # filter: re-asked answers, then a tier
    Select(d.find_element(By.ID, "filter-flag")).select_by_value("reasked")
    navigate(d, d.find_element(By.ID, "apply-filters").click)
    assert _table_ids(d) == ["rec-1"] and d.find_element(By.ID, "count").text.startswith("1 record")
    d.get(f"{server}/records")
    tier = d.find_element(By.CSS_SELECTOR, 'tr[data-id="rec-3"] td:nth-child(3)').text
    Select(d.find_element(By.ID, "filter-category")).select_by_value(tier)
    navigate(d, d.find_element(By.ID, "apply-filters").click)
    ids = _table_ids(d)
    assert "rec-3" in ids and all(
        d.find_element(By.CSS_SELECTOR, f'tr[data-id="{i}"] td:nth-child(3)').text == tier for i in ids)

    # mark one record incorrect, with a note
    d.get(f"{server}/records/rec-0")
    d.find_element(By.ID, "verdict-incorrect").click()
    d.find_element(By.ID, "note").send_keys("the plant is only announced")
    navigate(d, d.find_element(By.ID, "save").click)
    assert d.find_element(By.ID, "saved").text == "Saved."

    # correct another through the form
    d.get(f"{server}/records/rec-2")
    assert d.find_element(By.ID, "record-title").text == SCRIPT_TITLE  # shown as text, never run
    with pytest.raises(NoAlertPresentException):
        d.switch_to.alert.text  # noqa: B018 - raises when no alert is open
    scale = d.find_element(By.ID, "f_scale")
    scale.clear()
    scale.send_keys("10")
    reasoning = d.find_element(By.ID, "f_reasoning")
    reasoning.clear()
    reasoning.send_keys("A 3 MW plant runs today.")
    navigate(d, d.find_element(By.ID, "save").click)
    assert d.find_element(By.ID, "saved").text == "Saved."
    screenshot(d, "record")

    # a wrong value: the validator's message, what was typed kept, nothing saved
    d.get(f"{server}/records/rec-5")
    scale = d.find_element(By.ID, "f_scale")
    scale.clear()
    scale.send_keys("42")
    d.find_element(By.ID, "verdict-incorrect").click()
    navigate(d, d.find_element(By.ID, "save").click)
    error = d.find_element(By.ID, "error").text
    assert "Not saved" in error and "at scale: 42 is greater than the maximum of 10" in error
    assert d.find_element(By.ID, "f_scale").get_attribute("value") == "42"
    assert d.find_element(By.ID, "verdict-incorrect").is_selected()  # the verdict is kept too
    screenshot(d, "record_invalid")
    assert "rec-5" not in _stored(server)

    # keyboard: "c" marks the answer correct, saves and moves on
    d.get(f"{server}/records/rec-6")
    navigate(d, lambda: d.find_element(By.TAG_NAME, "body").send_keys("c"))
    assert d.find_element(By.ID, "record-title").text == "Heat pump plant 7"

    # reload: everything is still there
    d.get(f"{server}/records?status=reviewed")
    d.refresh()
    assert _table_ids(d) == ["rec-0", "rec-2", "rec-6"]
    statuses = [td.text for td in d.find_elements(By.CSS_SELECTOR, "#records td.status")]
    assert statuses == ["incorrect", "corrected", "correct"]
    d.get(f"{server}/records/rec-0")
    assert d.find_element(By.ID, "verdict-incorrect").is_selected()
    assert d.find_element(By.ID, "note").get_attribute("value") == "the plant is only announced"
    d.get(f"{server}/records/rec-2")
    assert d.find_element(By.ID, "f_scale").get_attribute("value") == "10"
    stored = _stored(server)
    assert stored["rec-2"]["corrected"]["scale"] == 10 and stored["rec-2"]["is_correct"] is False
    assert stored["rec-6"]["is_correct"] is True and stored["rec-0"]["is_correct"] is False


def test_the_analytics_page_renders_its_plots(browser, server):
    from selenium.webdriver.common.by import By

    d = browser
    d.get(f"{server}/analytics")
    plots = d.find_elements(By.CSS_SELECTOR, "#plots figure.plot svg")
    assert len(plots) >= 8
    for svg in plots:
        assert svg.size["width"] > 200 and svg.size["height"] > 100
    names = {f.get_attribute("id") for f in d.find_elements(By.CSS_SELECTOR, "#plots figure.plot")}
    assert {"plot-cost", "plot-tokens", "plot-categories", "plot-confusion", "plot-student_errors"} <= names
    assert "Cumulative cost per provider" in d.find_element(By.ID, "plot-cost").text
    screenshot(d, "analytics")
