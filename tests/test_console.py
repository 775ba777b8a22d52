"""The web console in a real Chromium against a real server, model and queue.

One server (versions 1 and 2 of the trained model, a refused version 3, stable -> 1),
one worker on its own queue, one headless browser for the module. Each test asserts on
what the page shows and that the browser logged no error it did not expect.
"""

from __future__ import annotations

import json
import os
import re

import pytest
import requests

from imgclf import registry
from imgclf.jobs.spec import TERMINAL
from tests import browser
from tests.browser import attribute, open_page, select, text, wait_text, wait_until
from tests.faults import refused_version
from tests.servers import copy_version, start_server
from tests.workers import WorkerProcess, isolated_queue, wait_final

ADMIN = "console-admin-token"
# Chromium logs every 4xx answer as an error; these are the ones a step provokes on purpose.
EXTRA = {"batch_size": 16, "recipe": "fine_tune", "augmentation": "light"}
NO_TOKEN_YET = "/v1/models - Failed to load resource: the server responded with a status of 401"

pytestmark = pytest.mark.slow

if not browser.available():
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(browser.MISSING, pytrace=False)
    pytest.skip(browser.MISSING, allow_module_level=True)


@pytest.fixture(scope="module")
def console(trained, tmp_path_factory, redis_url, shapes_dir):
    root = tmp_path_factory.mktemp("console")
    model_dir = root / "models"
    for version in (1, 2):
        copy_version(trained.version_dir, model_dir, "shapes", version)
    refused_version(trained.version_dir, model_dir, "shapes", 3)
    registry.set_alias(model_dir, "shapes", registry.STABLE, 1, by="test")
    settings, worker_env = isolated_queue(root, redis_url, [shapes_dir.parent])
    queue = {
        key: getattr(settings, key)
        for key in ("broker_url", "result_backend", "queue", "key_prefix", "data_roots", "work_dir")
    }
    server = start_server(model_dir, admin_tokens=[ADMIN], **queue)
    worker = WorkerProcess(worker_env, root / "worker.log")
    driver = browser.chrome()
    try:
        server.base = f"http://127.0.0.1:{server.rest_port}"
        server.model_dir = model_dir
        server.shapes = shapes_dir
        server.driver = driver
        server.worker = worker
        driver.get(server.base + "/ui/")
        driver.find_element("id", "token").send_keys(ADMIN + "\n")
        wait_text(driver, "#token-state", "token set")
        wait_text(driver, "article[data-model=shapes]", "shapes")
        assert browser.severe_logs(driver, allowed=(NO_TOKEN_YET,)) == []
        yield server
    finally:
        driver.quit()
        worker.stop()
        server.stop()


def version_row(console, version: int):
    """The Models page's table row of `version` (None while it is not shown)."""
    rows = console.driver.find_elements("css selector", "article[data-model=shapes] tbody tr")
    return next((r for r in rows if r.find_element("tag name", "th").text == str(version)), None)


def row_shows(console, version: int, expected: str) -> bool:
    row = version_row(console, version)
    return row is not None and expected in row.text


def test_models_page_shows_versions_states_aliases_and_metrics(console):
    open_page(console.driver, console.base, "models")
    wait_until(lambda: row_shows(console, 3, "refused"), what="version 3 refused")
    v3 = version_row(console, 3).text
    assert "golden" in v3  # the reason the server refused it
    v1 = version_row(console, 1).text
    assert "stable" in v1 and "AVAILABLE" in v1
    assert re.search(r"\d+\.\d%", v1) and "MB" in v1  # test accuracy, artifact size
    card = json.loads((console.model_dir / "shapes/1/model_card.json").read_text())
    assert f"{100 * card['metrics']['test']['accuracy']:.1f}%" in v1
    assert card["diagnosis"]["status"] in v1
    assert browser.severe_logs(console.driver) == []


def test_every_control_is_labelled_and_reachable_by_keyboard(console):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(console.driver, console.base, "models")
    driver = console.driver
    unlabelled = driver.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')]"
        ".filter((e) => !e.labels.length).map((e) => e.id || e.name)"
    )
    assert unlabelled == []
    reached = []
    for _ in range(20):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        reached.append(driver.execute_script("return document.activeElement.textContent.trim()"))
    assert {"Models", "Try it", "Compare", "Jobs", "Report v1", "Promote"} <= set(reached)


def test_try_it_shows_labels_with_percentages_and_the_version(console):
    open_page(console.driver, console.base, "try")
    driver = console.driver
    select(driver, "#try-target", "versions/1")
    images = sorted((console.shapes / "circle").glob("*.png"))[:2]
    driver.find_element("id", "try-files").send_keys("\n".join(str(p) for p in images))
    driver.find_element("css selector", "#try-form button[type=submit]").click()
    answered = wait_text(driver, ".answered", "version 1")
    assert re.search(r"in \d+ ms", answered)
    results = driver.find_elements("css selector", "#try-results figure.result")
    assert len(results) == 2
    expected = requests.post(
        f"{console.base}/v1/models/shapes/versions/1:upload",
        files={"file": (images[0].name, images[0].read_bytes())},
        data={"top_k": "3"},
        timeout=30,
    ).json()["results"][0]["top"][0]
    first = results[0].find_element("css selector", ".top li")
    assert first.find_element("css selector", ".label").text == expected["label"]
    assert first.find_element("css selector", ".score").text == f"{100 * expected['score']:.1f}%"
    assert browser.severe_logs(driver) == []


def test_a_version_report_opens(console):
    open_page(console.driver, console.base, "models")
    driver = console.driver
    version_row(console, 2).find_element("css selector", "button").click()
    wait_text(driver, "#report-h", "version 2")
    frame = driver.find_element("id", "report-frame")
    driver.switch_to.frame(frame)
    try:
        wait_until(
            lambda: "Confusion" in driver.find_element("tag name", "body").text or None,
            what="the report's text",
        )
        images = driver.find_elements("tag name", "img")
        sources = [i.get_attribute("src") for i in images]
        assert sources and all(s.startswith("data:image/") for s in sources)
        assert sum(s.startswith("data:image/png") for s in sources) >= 2  # curves, matrix
        assert all(driver.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
    finally:
        driver.switch_to.default_content()
    assert browser.severe_logs(driver) == []


def test_compare_two_versions_shows_deltas_matrices_and_the_gate(console):
    open_page(console.driver, console.base, "compare")
    driver = console.driver
    select(driver, "#cmp-a", "1")
    select(driver, "#cmp-b", "2")
    driver.find_element("css selector", "#compare-form button").click()
    verdict = wait_text(driver, ".verdict", "version 2 against version 1")
    assert verdict.endswith("promote")  # the same weights: no rule can refuse
    labels = json.loads((console.model_dir / "shapes/1/model_card.json").read_text())["labels"]
    rows = driver.find_elements("css selector", "#per-class tbody tr")
    assert [r.find_element("tag name", "th").text for r in rows] == labels
    for row in rows:  # the same weights: every per-class delta is zero
        cells = [d.text for d in row.find_elements("css selector", "td")]
        assert [cells[2], cells[5], cells[6]] == ["0.0 pts"] * 3  # precision, recall, F1
    matrices = driver.find_elements("css selector", "table.matrix")
    assert len(matrices) == 2
    assert browser.severe_logs(driver) == []


def test_promote_roll_back_and_a_refused_version_explained(console):
    open_page(console.driver, console.base, "models")
    driver = console.driver
    select(driver, "#promote-version-shapes", "2")
    driver.find_element("css selector", "article[data-model=shapes] form.promote button").click()
    wait_text(driver, "#promote-result-shapes", "stable → version 2: loaded and serving")
    wait_until(lambda: row_shows(console, 2, "stable"), what="stable on version 2")
    assert "stable" not in version_row(console, 1).text
    assert registry.aliases(console.model_dir, "shapes")["stable"] == 2
    select(driver, "#promote-version-shapes", "3")
    driver.find_element("css selector", "article[data-model=shapes] form.promote button").click()
    refused = wait_text(driver, "#promote-result-shapes", "refused:")
    assert "golden" in refused
    assert registry.aliases(console.model_dir, "shapes")["stable"] == 2
    driver.find_element("css selector", "article[data-model=shapes] button.rollback").click()
    wait_text(driver, "#promote-result-shapes", "stable → version 1: loaded and serving")
    assert registry.aliases(console.model_dir, "shapes")["stable"] == 1
    wait_until(lambda: row_shows(console, 1, "stable"), what="stable back on 1")
    assert browser.severe_logs(driver, allowed=("status of 409",)) == []


def fill(driver, field: str, value: str) -> None:
    element = driver.find_element("id", f"job-{field}")
    element.clear()
    element.send_keys(value)


def test_job_form_errors_sit_next_to_the_field_and_a_job_runs_to_the_end(console):
    from imgclf.jobs.store import open_store

    console.worker.wait_ready()
    open_page(console.driver, console.base, "jobs")
    driver = console.driver
    submit = driver.find_element("css selector", "#job-form button[type=submit]")
    fill(driver, "name", "shapes")
    fill(driver, "data", "/etc")
    fill(driver, "head_epochs", "-1")
    submit.click()
    assert "head_epochs" in wait_text(driver, "#err-head_epochs", "head_epochs")
    assert driver.find_element("id", "job-head_epochs").get_attribute("aria-invalid") == "true"
    fill(driver, "head_epochs", "3")
    submit.click()
    wait_text(driver, "#err-data", "outside the allowed data roots")
    assert text(driver, "#err-head_epochs") == ""
    fill(driver, "data", str(console.shapes))
    select(driver, "#job-weights", "none")
    fill(driver, "image_size", "32")
    fill(driver, "fine_tune_epochs", "1")
    # Only the chance rule of the promotion gate: this test is about the page, not the gate.
    fill(
        driver,
        "extra",
        json.dumps(
            {**EXTRA, "promotion_tolerance": 1, "max_recall_drop": 1, "promotion_confidence": 0}
        ),
    )
    submit.click()
    started = wait_text(driver, "#job-form-result", "queued")
    short = started.split()[1]
    row = f"tr[data-job^='{short}']"
    wait_until(lambda: "epoch" in text(driver, f"{row} .progress"), 600, "epoch progress")
    final = wait_until(
        lambda: (
            attribute(driver, row, "data-status") in TERMINAL
            and attribute(driver, row, "data-status")
        ),
        900,  # minutes on a busy 2-core machine
        "the job to finish",
    )
    store = open_store(console.settings.result_backend, console.settings.key_prefix)
    job_id = attribute(driver, row, "data-job")
    record = wait_final(store, job_id, 10)
    assert final == record["status"] == "succeeded", record.get("error")
    wait_text(driver, "dd[data-fact=Status]", "succeeded")
    assert text(driver, "dd[data-fact=Version]") == str(record["version"])
    assert wait_text(driver, "#job-log", "Epoch 1/")
    # A second job, cancelled from its details: the record and the row end "cancelled".
    submit.click()
    second = wait_text(driver, "#job-form-result", "queued").split()[1]
    assert second != short
    wait_text(driver, "#job-detail-h", f"Job {second}")
    driver.find_element("id", "job-cancel").click()
    wait_until(
        lambda: attribute(driver, f"tr[data-job^='{second}']", "data-status") == "cancelled",
        120,
        "the second job cancelled",
    )
    wait_text(driver, "dd[data-fact=Status]", "cancelled")
    assert browser.severe_logs(driver, allowed=("status of 400",)) == []

    # The published version shows up on the Models page once the server has loaded it.
    def published_version_shown() -> bool:
        open_page(driver, console.base, "models")
        return row_shows(console, record["version"], "AVAILABLE")

    wait_until(published_version_shown, 180, f"version {record['version']} on the Models page")
