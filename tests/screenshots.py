"""Regenerate the console screenshots in docs/console/ (`python -m tests.screenshots`).

Builds what the pages show from scratch: a generated shapes data set, two real
trainings (a weak one-epoch version 1 and a better version 2, so Compare has deltas),
a server with an admin token, a worker on its own queue in the Redis at --redis, and
Debian's headless Chromium. Takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from imgclf import registry
from tests import browser
from tests.browser import open_page, select, text, wait_text, wait_until

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs/console"
TOKEN = "screenshot-token"


def _train(root: Path, data: Path, models: Path, **changes) -> None:
    from imgclf.config import parse_config
    from imgclf.trainer.run import train_and_export
    from tests.conftest import FAST

    run = root / f"run{len(list(root.glob('run*')))}"
    train_and_export(
        parse_config({**FAST, **changes}), data=data, name="shapes", model_dir=models, run_dir=run
    )


def _shoot(driver, name: str, width: int = 1280) -> None:
    """The whole page at this width (the window grows to the document's height)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(800, height + 140))
    driver.save_screenshot(str(OUT / f"{name}.png"))
    driver.set_window_size(width, 800)
    print("wrote", OUT / f"{name}.png")


def capture(root: Path, redis_url: str) -> None:
    from imgclf.demo_data import make_shapes_dataset
    from tests.servers import start_server
    from tests.workers import WorkerProcess, isolated_queue

    data = make_shapes_dataset(root / "data", classes=3, per_class=30, size=48, seed=1)
    models = root / "models"
    _train(root, data, models, head_epochs=1, fine_tune_epochs=0)
    _train(root, data, models)
    registry.set_alias(models, "shapes", registry.STABLE, 1, by="screenshots")
    settings, env = isolated_queue(root, redis_url, [data.parent])
    keys = ("broker_url", "result_backend", "queue", "key_prefix", "data_roots", "work_dir")
    server = start_server(models, admin_tokens=[TOKEN], **{k: getattr(settings, k) for k in keys})
    worker = WorkerProcess(env, root / "worker.log")
    driver = browser.chrome()
    base = f"http://127.0.0.1:{server.rest_port}"
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(base + "/ui/")
        driver.find_element("id", "token").send_keys(TOKEN + "\n")
        wait_text(driver, "article[data-model=shapes]", "shapes")
        _shoot(driver, "models")
        driver.find_element("css selector", "article[data-model=shapes] tbody button").click()
        wait_text(driver, "#report-h", "Report")
        driver.execute_script("document.getElementById('report-frame').style.height = '1400px'")
        _shoot(driver, "report")

        open_page(driver, base, "try")
        images = [sorted((data / c).glob("*.png"))[0] for c in ("circle", "square", "triangle")]
        driver.find_element("id", "try-files").send_keys("\n".join(str(p) for p in images))
        driver.find_element("css selector", "#try-form button[type=submit]").click()
        wait_text(driver, ".answered", "Answered")
        _shoot(driver, "try")

        open_page(driver, base, "compare")
        select(driver, "#cmp-a", "1")
        select(driver, "#cmp-b", "2")
        driver.find_element("css selector", "#compare-form button").click()
        wait_text(driver, ".verdict", "Promotion gate")
        _shoot(driver, "compare")

        open_page(driver, base, "models")
        select(driver, "#promote-version-shapes", "2")
        driver.find_element(
            "css selector", "article[data-model=shapes] form.promote button"
        ).click()
        wait_text(driver, "#promote-result-shapes", "serving")
        _shoot(driver, "promote")
        driver.set_window_size(390, 844)
        _shoot(driver, "models-phone", width=390)
        driver.set_window_size(1280, 800)

        worker.wait_ready()
        open_page(driver, base, "jobs")
        for field, value in (("name", "shapes"), ("data", str(data)), ("head_epochs", "-1")):
            driver.find_element("id", f"job-{field}").send_keys(value)
        driver.find_element("css selector", "#job-form button[type=submit]").click()
        wait_text(driver, "#err-head_epochs", "head_epochs")
        _shoot(driver, "jobs-form-error")
        driver.find_element("id", "job-head_epochs").clear()
        driver.find_element("id", "job-head_epochs").send_keys("6")
        select(driver, "#job-weights", "none")
        driver.find_element("id", "job-image_size").send_keys("32")
        extra = {"batch_size": 16, "recipe": "fine_tune", "fine_tune_epochs": 2}
        driver.find_element("id", "job-extra").send_keys(json.dumps(extra))
        driver.find_element("css selector", "#job-form button[type=submit]").click()
        wait_until(lambda: "ETA" in text(driver, "dd[data-fact=Progress]"), 300, "progress")
        wait_until(lambda: "Epoch" in text(driver, "#job-log"), 300, "the log")
        _shoot(driver, "jobs")
    finally:
        driver.quit()
        worker.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis for the queue")
    args = parser.parse_args()
    if not browser.available():
        raise SystemExit(browser.MISSING)
    with tempfile.TemporaryDirectory(prefix="imgclf-screenshots-") as folder:
        capture(Path(folder), args.redis)


if __name__ == "__main__":
    main()
