"""Debian's Chromium driven by Selenium for the console tests and screenshots.

Nothing is downloaded: the browser and its driver are the system's (/usr/bin/chromium,
/usr/bin/chromedriver, from Debian's chromium and chromium-driver packages), given to
Selenium by path, and Selenium Manager is told to stay offline.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

CHROMIUM = Path(os.environ.get("IMGCLF_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("IMGCLF_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
WAIT_S = 60
MISSING = (
    "the console tests need Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver; scripts/bootstrap.sh does it as root) and the selenium package"
)


def available() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return all(p.is_file() and os.access(p, os.X_OK) for p in (CHROMIUM, CHROMEDRIVER))


def chrome(width: int = 1280, height: int = 800):
    """A headless Chromium whose console log (goog:loggingPrefs browser) can be read."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=os.devnull)
    return webdriver.Chrome(options=options, service=service)


def severe_logs(driver, allowed: tuple[str, ...] = ()) -> list[str]:
    """The browser console's errors since the last call, minus those containing `allowed`."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and not any(a in entry["message"] for a in allowed)
    ]


def wait_until(predicate, timeout: float = WAIT_S, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what or predicate}")


def text(driver, css: str) -> str:
    """The first match's text, or '' (also when the page replaced it while reading)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        found = driver.find_elements("css selector", css)
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def attribute(driver, css: str, name: str) -> str:
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        found = driver.find_elements("css selector", css)
        return (found[0].get_attribute(name) or "") if found else ""
    except StaleElementReferenceException:
        return ""


def wait_text(driver, css: str, expected: str, timeout: float = WAIT_S) -> str:
    return wait_until(
        lambda: expected in text(driver, css) and text(driver, css),
        timeout,
        f"{expected!r} in {css} (now {text(driver, css)!r})",
    )


def open_page(driver, base: str, page: str) -> None:
    driver.get(f"{base}/ui/#{page}")
    driver.refresh()  # a new hash alone does not reload; the session token stays
    wait_until(
        lambda: driver.find_element("css selector", "body").get_attribute("data-ready") == page,
        what=f"page {page}",
    )


def select(driver, css: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("css selector", css)).select_by_value(value)
