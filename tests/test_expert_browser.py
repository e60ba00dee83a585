"""End to end in a real headless browser: an expert answers a 10-image session by mouse and
keyboard, double-clicks, undoes, reloads the page mid-way, finishes; the saved confusion matrix must
be what the clicks imply. Needs Debian's chromium and chromium-driver (.ci/run installs them) and the
selenium package (the `test` extra); skips with the reason where they are absent."""

from __future__ import annotations

import json
import shutil

import pytest

from augkit.expert import ExpertServer, Session, build_report, create_session, write_report
from augkit.expert.stats import Confusion
from test_expert import make_sources

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[test]')")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _browser_paths() -> tuple[str, str]:
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no chromium/chromedriver on this machine (apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,800", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    yield driver
    driver.quit()


def _wait_ready(driver, answered: int):
    """Until the page shows image number answered+1, loaded and answerable."""
    def ready(d):
        body = d.find_element(By.TAG_NAME, "body")
        return (body.get_attribute("data-state") == "ready"
                and d.find_element(By.ID, "progress-text").text == f"{answered} / 10 answered")
    WebDriverWait(driver, 15).until(ready)


def _shown_id(driver) -> str:
    return driver.find_element(By.ID, "cell").get_attribute("src").rsplit("/img/", 1)[1]


def test_an_expert_session_in_a_real_browser(tmp_path, browser):
    real, fake = make_sources(tmp_path)
    folder = tmp_path / "sessions" / "e2e"
    create_session(folder, real, fake, 5, seed=11, show_class=True)
    truth = {item.id: item.source for item in Session(folder).items}
    session = Session(folder, writer=True)
    server = ExpertServer(session, port=0, on_complete=lambda s: write_report(build_report([s]), s.folder))
    server.start_in_thread()
    try:
        browser.get(server.url)
        given = {}     # image id -> the answer that should count
        for k in range(10):
            _wait_ready(browser, k)
            image_id = _shown_id(browser)
            assert image_id == session.items[k].id
            assert browser.find_element(By.ID, "class-label").text == f"Class: {session.items[k].class_name}"
            choice = truth[image_id] if k % 3 else ("real" if truth[image_id] == "fake" else "fake")  # some wrong
            if k == 2:  # a wrong answer by key, taken back with U, then the right one
                ActionChains(browser).send_keys("f" if choice == "real" else "r").perform()
                _wait_ready(browser, 3)
                ActionChains(browser).send_keys("u").perform()
                _wait_ready(browser, 2)
                assert _shown_id(browser) == image_id
            if k == 6:  # the page is reloaded mid-way: it goes on at image 7
                browser.refresh()
                _wait_ready(browser, 6)
                assert _shown_id(browser) == image_id
            if k % 2:
                ActionChains(browser).send_keys(choice[0]).perform()
            elif k == 4:  # a double click answers once
                ActionChains(browser).double_click(browser.find_element(By.ID, choice)).perform()
            else:
                browser.find_element(By.ID, choice).click()
            given[image_id] = choice
        WebDriverWait(browser, 15).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")
        assert "All images answered" in browser.find_element(By.ID, "done").text
        assert browser.get_log("browser") == []  # no script error, no blocked asset
    finally:
        server.shutdown()
        server.server_close()
        session.close()

    expected = Confusion.of((truth[i], a) for i, a in given.items())
    assert expected.tp and expected.tn and expected.fp and expected.fn  # the clicks cover every cell
    saved = json.loads((folder / "expert_report.json").read_text())
    assert saved["sessions"][0]["overall"]["matrix"] == expected.matrix()
    assert saved["sessions"][0]["answered"] == 10
    events = [json.loads(line)["event"] for line in (folder / "answers.jsonl").read_text().splitlines()]
    assert events.count("answer") == 11 and events.count("undo") == 1
