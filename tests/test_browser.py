"""The app in a real browser: headless Chromium from Debian's packages, driven by Selenium.

`bash scripts/setup.sh --dev` installs Chromium when it is missing. Without it this module skips
locally, but fails in CI (CI=true): a browser test that silently does not run proves nothing.
Screenshots and the measured time to first streamed tokens go to test-artifacts/.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements-dev.txt)"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (bash scripts/setup.sh --dev installs chromium and chromium-driver)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="selfspec-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}", "--window-size=1280,1000"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def text_of(driver, elem_id: str) -> str:
    return driver.execute_script(f"const e = document.getElementById('{elem_id}'); return e ? e.innerText : '';")


def tokens_in(driver, elem_id: str) -> int:
    match = re.search(r"(\d+) tokens?", text_of(driver, elem_id))
    return int(match.group(1)) if match else 0


def wait_for(condition, timeout: float, what: str, poll: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def open_app(driver, url: str, **params) -> None:
    query = "&".join(f"{k}={quote(str(v))}" for k, v in params.items())
    driver.get(f"{url}?{query}" if query else url)
    wait_for(lambda: driver.execute_script("return !!document.querySelector('#prompt textarea')"), 60, "the page")


def type_prompt(driver, prompt: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, "#prompt textarea")
    box.clear()
    box.send_keys(prompt)


def click(driver, elem_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, elem_id).click()


def screenshot(driver, name: str, width: int) -> Path:
    driver.set_window_size(width, 1000)
    time.sleep(0.5)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(height, 800), 6000))
    time.sleep(0.5)  # let the layout and the charts settle at the new width
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def test_run_in_browser_streams_both_outputs_and_charts(browser, app_url, solo):
    open_app(browser, app_url, max_new_tokens=24)  # also checks that a shared link restores settings
    prompt = "Explain in one sentence why the sea is salty."
    type_prompt(browser, prompt)
    clicked = time.monotonic()
    click(browser, "run")
    wait_for(lambda: tokens_in(browser, "ar-panel") > 0, 60, "the first streamed tokens")
    first_tokens = time.monotonic() - clicked
    wait_for(lambda: "Done." in text_of(browser, "summary"), 300, "the end of the race")
    wait_for(lambda: browser.execute_script("return !!document.querySelector('#race-plot .js-plotly-plot')"),
             30, "a chart")
    assert tokens_in(browser, "ar-panel") == tokens_in(browser, "spec-panel") == len(solo(prompt, 24))
    summary = text_of(browser, "summary")
    assert "outputs identical" in summary and "tok/s" in summary
    assert "drafted, accepted by the full model" in text_of(browser, "spec-panel")  # the legend
    assert "skip-layer draft (3 of 60 sublayers skipped)" in text_of(browser, "spec-panel")  # the paper's draft here
    (ARTIFACTS / "first-token-latency.txt").write_text(f"{first_tokens:.3f} s from clicking Run to first tokens\n")
    print(f"\nfirst streamed tokens {first_tokens:.2f} s after clicking Run")
    # The share link carries the prompt and settings.
    click(browser, "share")
    link = wait_for(lambda: browser.execute_script("return document.querySelector('#share-link textarea').value"),
                    10, "the share link")
    assert "max_new_tokens=24" in link and "prompt=Explain" in link
    assert screenshot(browser, "app-desktop.png", 1280).stat().st_size > 0
    assert screenshot(browser, "app-phone.png", 390).stat().st_size > 0
    browser.set_window_size(1280, 1000)


def test_stop_cancels_both_runs_and_the_next_run_works(browser, app_url, app_module, solo, race_closed):
    open_app(browser, app_url, max_new_tokens=400)
    type_prompt(browser, "Write a long story about a lighthouse keeper.")
    click(browser, "run")
    wait_for(lambda: tokens_in(browser, "ar-panel") > 0 and tokens_in(browser, "spec-panel") > 0, 120,
             "both panels to stream")
    click(browser, "stop")
    assert race_closed.wait(120), "Stop did not close the decoders"  # nothing can stream after this
    assert not app_module.DEVICE_LOCK.locked(), "the stopped run still holds the device"
    assert tokens_in(browser, "ar-panel") < 400 and "Done." not in text_of(browser, "summary")
    open_app(browser, app_url, max_new_tokens=8)
    prompt = "Name a colour."
    type_prompt(browser, prompt)
    click(browser, "run")
    wait_for(lambda: "Done." in text_of(browser, "summary"), 300, "the next run to finish")
    assert "outputs identical" in text_of(browser, "summary")
    assert tokens_in(browser, "ar-panel") == len(solo(prompt, 8))


def test_empty_prompt_shows_a_message_in_the_page(browser, app_url):
    open_app(browser, app_url)
    type_prompt(browser, "   ")
    click(browser, "run")
    wait_for(lambda: "prompt is empty" in browser.find_element("tag name", "body").text, 30, "the error message")
    assert "Traceback" not in browser.find_element("tag name", "body").text


def test_a_waiting_run_shows_its_queue_position(browser, app_url, app_module):
    from gradio_client import Client

    from test_app import args

    busy = Client(app_url, verbose=False).submit(**args("Count from one to a hundred.", 400), api_name="/compare")
    wait_for(lambda: busy.outputs(), 120, "the first run to start", poll=0.05)
    open_app(browser, app_url, max_new_tokens=4)
    type_prompt(browser, "Hi")
    click(browser, "run")
    wait_for(lambda: "queue: 1/1" in text_of(browser, "spec-panel"), 30, "the queue position")
    busy.cancel()  # long enough never to finish first on a fast machine; stopping it lets the page's run start
    wait_for(lambda: "Done." in text_of(browser, "summary"), 120, "the queued run to finish")
