"""Every attack of issue #10 against a real server, with its answer and what it cost.

    python -m bench.attacks [--image-size 64] [--workdir DIR]

Starts one imgclf server in this process (so its peak memory can be read) on the
benchmarks' model, keeps a client loop predicting on the healthy model, and runs each
attack in turn. For each: the answer, the healthy loop's failed requests meanwhile,
the growth of the process's peak RSS, and how long the attack's own answer took.
Rewrites the table in docs/serving.md ("Reliability") and bench/results/attacks.json.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import resource
import shutil
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import requests

from bench import common

DOC = Path(__file__).resolve().parent.parent / "docs" / "serving.md"
START, END = "<!-- attacks:start -->", "<!-- attacks:end -->"


# ---- decoder bombs: tiny files whose headers or frames claim huge canvases ---------------
def gif_bomb(screen: int = 1, frame: int = 20000) -> bytes:
    """Logical screen `screen`x`screen`, one frame `frame`x`frame` (a valid tiny LZW stream)."""
    header = b"GIF89a" + struct.pack("<HHBBB", screen, screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, frame, frame, 0)
    return header + descriptor + b"\x02\x02\x44\x01\x00" + b"\x3b"


def png_bomb(side: int = 100_000) -> bytes:
    """A PNG header for a `side`x`side` RGB image (the data would follow)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


def jpeg_bomb(side: int = 65000) -> bytes:
    """A JPEG whose start-of-frame claims `side`x`side` (progressive: coefficients too)."""
    sof = b"\xff\xc2" + struct.pack(">HBHHB", 17, 8, side, side, 3) + b"\x01\x11\x00" * 3
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + sof


def large_jpeg(side: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (120, 30, 200)).save(buffer, "JPEG", quality=50)
    return buffer.getvalue()


# ---- the harness --------------------------------------------------------------------------
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Healthy:
    """A client loop on the healthy model; counts its failures between marks."""

    def __init__(self, url: str, image: bytes) -> None:
        self.url = url
        self.body = json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]})
        self.failures: list[str] = []
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                answer = session.post(
                    self.url,
                    data=self.body,
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                )
                if answer.status_code != 200:
                    self.failures.append(f"{answer.status_code} {answer.text[:100]}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc)[:100])
            self.count += 1
            time.sleep(0.02)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def wait_for(predicate: Callable[[], object], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def short(answer: requests.Response) -> str:
    try:
        message = answer.json().get("error", "")
    except ValueError:
        message = answer.text
    if len(message) > 110:  # cut at a word, so no setting name is left half-written
        message = message[:110].rsplit(" ", 1)[0] + " ..."
    return f"{answer.status_code} {message}".strip()


def run_attacks(root: Path, image_size: int) -> list[dict]:
    from imgclf import registry
    from imgclf.server.app import ImgclfServer
    from imgclf.server.core import Target
    from imgclf.settings import Settings

    version_dir, data = common.prepare_model(root, image_size)
    model_dir = root / "attack-models"
    shutil.rmtree(model_dir, ignore_errors=True)
    for version in (1, 2):
        shutil.copytree(version_dir, model_dir / common.MODEL_NAME / str(version))
    registry.set_alias(model_dir, common.MODEL_NAME, "stable", 1)
    settings = Settings(
        model_dir=model_dir,
        rest_port=0,
        grpc_port=0,
        poll_interval=0.2,
        data_roots=[data.parent],
        result_backend=f"db+sqlite:///{root / 'attack-jobs.db'}",
        broker_url=f"sqla+sqlite:///{root / 'attack-broker.db'}",
    )
    server = ImgclfServer(settings).start()
    assert server.wait_ready(300), "the server did not become ready"
    base = f"http://127.0.0.1:{server.rest_port}"
    name = common.MODEL_NAME
    image = common.jpeg_images(data, 1)[0]
    predict = f"{base}/v1/models/{name}:predict"
    healthy = Healthy(f"{base}/v1/models/{name}/labels/stable:predict", image)
    healthy.start()

    def post_images(*images: bytes) -> requests.Response:
        body = {"instances": [{"b64": base64.b64encode(i).decode()} for i in images]}
        return requests.post(predict, json=body, timeout=120)

    def states(model: str = name) -> dict[str, str]:
        answer = requests.get(f"{base}/v1/models/{model}", timeout=10)
        if answer.status_code != 200:
            return {}
        return {s["version"]: s["state"] for s in answer.json()["model_version_status"]}

    def problems(model: str = name) -> list[str]:
        models = requests.get(f"{base}/v1/models", timeout=10).json()["models"]
        return next((m["problems"] for m in models if m["name"] == model), [])

    def promote(version: int) -> requests.Response:
        return requests.post(
            f"{base}/v1/models/{name}/labels/stable", json={"version": version}, timeout=120
        )

    def gif() -> str:
        return short(post_images(gif_bomb()))

    def png() -> str:
        return short(post_images(png_bomb()))

    def jpeg() -> str:
        return short(post_images(jpeg_bomb()))

    big = large_jpeg(4000)

    def budget() -> str:
        return short(post_images(*([big] * 4)))

    def body_50mb() -> str:
        answer = requests.post(
            predict,
            data=b"x" * (50 * 1024 * 1024),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        return f"{short(answer)} ({answer.headers.get('Content-Type')})"

    def refused_promote() -> str:
        tampered = model_dir / name / ".staging-tampered"
        shutil.copytree(version_dir, tampered)
        manifest = json.loads((tampered / "golden/manifest.json").read_text())
        manifest["inputs"][0]["probabilities"][0] += 0.01
        (tampered / "golden/manifest.json").write_text(json.dumps(manifest))
        tampered.rename(model_dir / name / "3")
        wait_for(lambda: states().get("3") == "END")
        answer = promote(3)
        serving = server.data.resolve(Target(name, alias="stable"))[0].version
        return f"{short(answer)}; stable serves {serving}"

    def rollback_unloaded() -> str:
        first = promote(2)
        unloaded = states().get("1")
        second = promote(1)
        serving = server.data.resolve(Target(name, alias="stable"))[0].version
        return (
            f"{first.status_code} to 2 (1 is {unloaded}), {second.status_code} back to 1; "
            f"stable serves {serving}"
        )

    def garbage_labels() -> str:
        path = model_dir / name / "labels.json"
        good = path.read_text()
        outcomes = []
        for garbage in ('{"labels": {"stable": "one"}}', "[]", "null"):
            path.write_text(garbage)
            wait_for(problems)
            outcomes.append(server.manager.labels(name).get("stable"))
            path.write_text(good)
            wait_for(lambda: not problems())
        return f"last good mapping kept (stable -> {outcomes}); reason in problems"

    def half_written() -> str:
        target = model_dir / name / "4"
        shutil.copytree(version_dir, target, ignore=shutil.ignore_patterns("variables*"))
        wait_for(lambda: states().get("4") == "END")
        refused = states().get("4")
        shutil.copytree(version_dir / "variables", target / "variables")
        started = time.monotonic()
        wait_for(lambda: states().get("4") == "AVAILABLE")
        return (
            f"{refused} while half-written, {states().get('4')} "
            f"{time.monotonic() - started:.1f}s after completion; stable still "
            f"{server.manager.resolve(name, label='stable').version}"
        )

    def broken_model() -> str:
        shutil.copytree(
            version_dir, model_dir / "broken" / "1", ignore=shutil.ignore_patterns("variables*")
        )
        wait_for(lambda: states("broken").get("1") == "END")
        ready = requests.get(f"{base}/readyz", timeout=5)
        reason = ready.json()["models"]["broken"]["reason"][:60]
        return f"/readyz {ready.status_code}; broken: {reason}"

    def full_width_version() -> str:
        folder = model_dir / name / "\uff19"  # FULLWIDTH DIGIT NINE
        shutil.copytree(version_dir, folder)
        time.sleep(1.0)  # a few scans
        return "ignored (not a version)" if "9" not in states() else "served as 9"

    def metric_names() -> str:
        before = len(requests.get(f"{base}/metrics", timeout=10).text)
        for i in range(100):
            requests.post(f"{base}/v1/models/{'m' * 60}{i}:predict", json={}, timeout=10)
        after = len(requests.get(f"{base}/metrics", timeout=10).text)
        return f"404s; /metrics grew {after - before} bytes (one _unknown series)"

    def idle_and_slowloris() -> str:
        held = []
        try:
            for _ in range(500):
                held.append(socket.create_connection(("127.0.0.1", server.rest_port), timeout=5))
            for _ in range(150):
                sock = socket.create_connection(("127.0.0.1", server.rest_port), timeout=5)
                sock.sendall(b"POST /v1/models/x:predict HTTP/1.1\r\nHost: a\r\n")
                held.append(sock)
            worst = 0.0
            for _ in range(5):
                started = time.monotonic()
                assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
                assert post_images(image).status_code == 200
                worst = max(worst, time.monotonic() - started)
            return f"/healthz + predict still 200, slowest pair {worst * 1000:.0f} ms"
        finally:
            for sock in held:
                sock.close()

    def cross_site() -> str:
        text_plain = requests.post(
            f"{base}/v1/jobs",
            data=json.dumps({"name": name, "data": str(data)}),
            headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
            timeout=10,
        )
        foreign = requests.post(
            f"{base}/v1/models/{name}/labels/stable",
            json={"version": 2},
            headers={"Origin": "http://evil.example"},
            timeout=10,
        )
        rebinding = requests.post(
            f"{base}/v1/models/{name}/labels/stable",
            json={"version": 2},
            headers={"Host": "evil.example"},
            timeout=10,
        )
        return (
            f"text/plain job {text_plain.status_code}, foreign Origin {foreign.status_code}, "
            f"foreign Host {rebinding.status_code}"
        )

    def nul_path() -> str:
        answer = requests.post(
            f"{base}/v1/jobs", json={"name": name, "data": "shapes\u0000x"}, timeout=30
        )
        return short(answer)

    attacks: list[tuple[str, Callable[[], str]]] = [
        ("GIF: 1x1 screen, one 20000x20000 frame (35 B)", gif),
        ("PNG header claiming 100000x100000", png),
        ("progressive JPEG header claiming 65000x65000", jpeg),
        ("4 JPEGs of 4000x4000 in one request (decode budget)", budget),
        ("50 MB body", body_50mb),
        ("promote stable to a refused version (golden mismatch)", refused_promote),
        ("promote 1 -> 2, then roll back to the unloaded 1", rollback_unloaded),
        ("labels.json hand-edited to garbage types", garbage_labels),
        ("half-written version, completed later", half_written),
        ("new model whose only version is broken", broken_model),
        ("version folder named with a full-width digit", full_width_version),
        ("100 predicts for unknown 61-char model names", metric_names),
        ("500 idle connections + 150 slowloris", idle_and_slowloris),
        ("cross-site requests (no token configured)", cross_site),
        ("NUL byte in a job's data path", nul_path),
    ]
    rows = []
    try:
        for title, attack in attacks:
            failures_before = len(healthy.failures)
            rss_before = peak_rss_mb()
            started = time.monotonic()
            try:
                answer = attack()
            except Exception as exc:  # the table shows it; it must not stop the others
                answer = f"harness error: {type(exc).__name__}: {exc}"[:140]
            failed = healthy.failures[failures_before:]
            rows.append(
                {
                    "attack": title,
                    "answer": answer,
                    "healthy_failures": len(failed),
                    "healthy_failure_samples": sorted(set(failed))[:3],
                    "rss_growth_mb": round(peak_rss_mb() - rss_before, 1),
                    "seconds": round(time.monotonic() - started, 2),
                }
            )
            print(f"{title}: {answer}", flush=True)
    finally:
        healthy.stop()
        server.stop()
    return rows


def markdown(rows: list[dict], machine: dict) -> str:
    lines = [
        "| attack | answer | healthy failures | peak RSS growth | time |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        answer = row["answer"].replace("|", "\\|")
        lines.append(
            f"| {row['attack']} | {answer} | {row['healthy_failures']} | "
            f"{row['rss_growth_mb']:.0f} MB | {row['seconds']:.2f} s |"
        )
    lines.append("")
    lines.append(
        f"Measured {machine['date']} on {machine['cpu']} ({machine['cores']} cores, load "
        f"average {machine['load_average'][0]}), TensorFlow {machine['tensorflow']}."
    )
    return "\n".join(lines)


def write_doc(table: str, doc: Path = DOC) -> None:
    text = doc.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    with common.workdir(args.workdir) as root:
        rows = run_attacks(root, args.image_size)
    machine = common.machine()
    table = markdown(rows, machine)
    print(table)
    write_doc(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "attacks.json").write_text(
        json.dumps({"machine": machine, "rows": rows}, indent=1), encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
