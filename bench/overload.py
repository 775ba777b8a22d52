"""Overload and decode memory at the DEFAULT settings, against `imgclf serve` in its own process.

    python -m bench.overload [--image-size 64] [--workdir DIR] [--seconds 8]
                             [--clients 1,16,64,200] [--concurrent 4] [--model-dir DIR]

`--model-dir` serves an existing repository with a model named `shapes` instead of
training the benchmarks' model (serving cost follows the model's image size; the decode
memory does not depend on the model at all).

1. Overload: closed-loop REST clients (each sends its next request as soon as the last
   one is answered), up to several times the server's thread count. Per client count:
   accepted requests a second, the p50/p99 latency of accepted requests, and the
   requests refused with 503 (and how many of those carried Retry-After). With the
   default queue bound a full queue refuses at once, so accepted latency stays bounded
   while the excess is refused.
2. Decode memory: the worst image of each format that the default limits admit (the
   largest canvas under both IMGCLF_MAX_IMAGE_PIXELS and IMGCLF_MAX_DECODE_BYTES), sent
   alone and then `--concurrent` at once; the server's peak RSS growth over its
   resting RSS (VmHWM, reset through /proc/PID/clear_refs before each case; Linux).

Rewrites the two tables in docs/serving.md (between the overload and decode-memory
markers) and bench/results/overload.json.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from bench import common, servers

DOC = Path(__file__).resolve().parent.parent / "docs" / "serving.md"
OVERLOAD = ("<!-- overload:start -->", "<!-- overload:end -->")
DECODE = ("<!-- decode-memory:start -->", "<!-- decode-memory:end -->")


# ---- overload ------------------------------------------------------------------------------
def closed_loop(url: str, body: bytes, clients: int, seconds: float) -> dict:
    """`clients` threads posting back to back for `seconds`; latencies of 200s, 503 counts."""
    accepted: list[float] = []
    refused = with_retry_after = other = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        nonlocal refused, with_retry_after, other
        session = requests.Session()
        headers = {"Content-Type": "application/json"}
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                answer = session.post(url, data=body, headers=headers, timeout=60)
                status, retry_after = answer.status_code, answer.headers.get("Retry-After")
            except requests.RequestException:
                status, retry_after = 0, None
            elapsed = time.perf_counter() - started
            with lock:
                if status == 200:
                    accepted.append(elapsed)
                elif status == 503:
                    refused += 1
                    with_retry_after += retry_after is not None
                else:
                    other += 1
            if status == 503:  # a client that honours Retry-After would wait; the loop
                time.sleep(0.01)  # keeps the pressure on instead, pausing only a little

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    wall = time.monotonic() - began
    stats = common.percentiles(accepted)
    return {
        "clients": clients,
        "accepted": len(accepted),
        "accepted_per_s": round(len(accepted) / wall, 1),
        "p50_ms": stats["p50_ms"],
        "p99_ms": stats["p99_ms"],
        "max_ms": round(max(accepted) * 1000, 1) if accepted else None,
        "refused_503": refused,
        "with_retry_after": with_retry_after,
        "other_errors": other,
    }


# ---- the worst images the limits admit -----------------------------------------------------
def largest_side(bytes_per_pixel: int, max_pixels: int, max_bytes: int) -> int:
    """Largest square canvas with side*side <= max_pixels and its decode bytes in budget."""
    side = int(min(max_pixels, max_bytes // bytes_per_pixel) ** 0.5)
    return side


def worst_images(max_pixels: int, max_bytes: int) -> dict[str, bytes]:
    """The largest admitted canvas per format, as real (solid-colour, small) files.

    Bytes a pixel as imgclf.server.imageinfo counts them: decoded output, decoder
    buffers, and the float32 RGB copy (12 bytes)."""
    from PIL import Image

    from imgclf.server.imageinfo import sniff

    def encode(side: int, fmt: str, **options) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (side, side), (120, 30, 200)).save(buffer, fmt, **options)
        return buffer.getvalue()

    images = {
        "JPEG baseline": encode(largest_side(3 + 12, max_pixels, max_bytes), "JPEG", quality=50),
        "JPEG progressive": encode(
            largest_side(3 + 6 + 12, max_pixels, max_bytes), "JPEG", quality=50, progressive=True
        ),
        "PNG 8-bit RGB": encode(largest_side(4 + 12, max_pixels, max_bytes), "PNG"),
        "GIF one frame": encode(largest_side(3 + 1 + 12, max_pixels, max_bytes), "GIF"),
    }
    for label, data in images.items():  # each one is admitted, and only just
        info = sniff(data)
        assert info is not None and info.pixels <= max_pixels, label
        assert info.decode_bytes <= max_bytes, (label, info.decode_bytes)
    return images


def hwm_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of the process in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def reset_hwm(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def decode_case(pid: int, url: str, image: bytes, concurrent: int) -> dict:
    body = json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode()
    time.sleep(0.5)  # let the previous case's memory settle
    reset_hwm(pid)
    resting, _ = hwm_mb(pid)
    answers: list[int] = []
    started = time.perf_counter()

    def send() -> None:
        answer = requests.post(
            url, data=body, headers={"Content-Type": "application/json"}, timeout=300
        )
        answers.append(answer.status_code)

    threads = [threading.Thread(target=send) for _ in range(concurrent)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _, peak = hwm_mb(pid)
    return {
        "concurrent": concurrent,
        "answers": sorted(set(answers)),
        "body_mb": round(len(body) / 2**20, 2),
        "resting_rss_mb": round(resting),
        "peak_growth_mb": round(peak - resting),
        "seconds": round(time.perf_counter() - started, 2),
    }


# ---- the run -------------------------------------------------------------------------------
def run(
    root: Path,
    image_size: int,
    seconds: float,
    clients: list[int],
    concurrent: int,
    model_dir: Path | None = None,
) -> dict:
    from imgclf import repository
    from imgclf.settings import Settings

    defaults = Settings()
    if model_dir is None:
        version_dir, data = common.prepare_model(root, image_size)
        model_dir = version_dir.parent.parent
    else:
        data = common.prepare_data(root, image_size)
        version_dir = repository.version_path(model_dir, common.MODEL_NAME, 1)
    model_size = repository.read_model_card(version_dir)["image_size"]
    port, grpc_port = common.free_port(), common.free_port()
    server = servers.start_imgclf(model_dir, port, grpc_port, root / "overload-server.log", {})
    base = f"http://{common.LOOPBACK}:{port}/v1/models/{common.MODEL_NAME}:predict"
    try:
        image = common.jpeg_images(data, 1)[0]
        small = json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode()
        closed_loop(base, small, 4, 2.0)  # warm
        overload = []
        for count in clients:
            row = closed_loop(base, small, count, seconds)
            overload.append(row)
            print(json.dumps(row), flush=True)
        images = worst_images(defaults.max_image_pixels, defaults.max_decode_bytes)
        decode = []
        for label, worst in images.items():
            from imgclf.server.imageinfo import sniff

            info = sniff(worst)
            for count in (1, concurrent):
                row = {
                    "image": f"{label} {info.width}x{info.height}",
                    "estimate_mb": round(info.decode_bytes / 2**20),
                    **decode_case(server.process.pid, base, worst, count),
                }
                decode.append(row)
                print(json.dumps(row), flush=True)
    finally:
        server.stop()
    return {
        "model_image_size": model_size,
        "settings": {
            "server_threads": defaults.server_threads,
            "max_batch_size": defaults.max_batch_size,
            "queue_bound": defaults.queue_bound(),
            "max_image_pixels": defaults.max_image_pixels,
            "max_decode_bytes": defaults.max_decode_bytes,
        },
        "overload": overload,
        "decode": decode,
    }


def overload_table(result: dict, machine: dict) -> str:
    s = result["settings"]
    lines = [
        "| clients | accepted/s | accepted p50 | accepted p99 | accepted max "
        "| 503 | 503 with Retry-After | other errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["overload"]:
        lines.append(
            f"| {row['clients']} | {row['accepted_per_s']} | {row['p50_ms']:.0f} ms | "
            f"{row['p99_ms']:.0f} ms | {row['max_ms']:.0f} ms | {row['refused_503']} | "
            f"{row['with_retry_after']} | {row['other_errors']} |"
        )
    lines += [
        "",
        _footer(
            machine,
            f"{result['model_image_size']} px model; defaults: {s['server_threads']} threads, "
            f"batch {s['max_batch_size']}, queue bound {s['queue_bound']}",
        ),
    ]
    return "\n".join(lines)


def decode_table(result: dict, machine: dict) -> str:
    s = result["settings"]
    lines = [
        "| worst admitted image | estimate | requests at once | answers | peak RSS growth | time |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["decode"]:
        answers = "/".join(str(a) for a in row["answers"])
        lines.append(
            f"| {row['image']} | {row['estimate_mb']} MiB | {row['concurrent']} | {answers} | "
            f"{row['peak_growth_mb']} MB | {row['seconds']:.1f} s |"
        )
    limits = (
        f"defaults: {s['max_image_pixels']} pixels, decode budget "
        f"{s['max_decode_bytes'] // 2**20} MiB"
    )
    lines += ["", _footer(machine, limits)]
    return "\n".join(lines)


def _footer(machine: dict, what: str) -> str:
    return (
        f"Measured {machine['date']} on {machine['cpu']} ({machine['cores']} cores, load "
        f"average {machine['load_average'][0]}), TensorFlow {machine['tensorflow']}; {what}."
    )


def write_section(markers: tuple[str, str], table: str, doc: Path = DOC) -> None:
    start, end = markers
    text = doc.read_text(encoding="utf-8")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{start}\n{table}\n{end}{tail}", encoding="utf-8")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_arguments(parser)
    parser.add_argument("--seconds", type=float, default=8.0, help="per client count")
    parser.add_argument("--clients", type=_ints, default=[1, 16, 64, 200])
    parser.add_argument("--concurrent", type=int, default=4, help="worst images at once")
    parser.add_argument("--model-dir", type=Path, help="serve this repository's 'shapes'")
    args = parser.parse_args(argv)
    with common.workdir(args.workdir) as root:
        result = run(
            root, args.image_size, args.seconds, args.clients, args.concurrent, args.model_dir
        )
    machine = common.machine()
    tables: list[tuple[tuple[str, str], Callable[[dict, dict], str]]] = [
        (OVERLOAD, overload_table),
        (DECODE, decode_table),
    ]
    for markers, render in tables:
        table = render(result, machine)
        print(table)
        write_section(markers, table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overload.json").write_text(
        json.dumps({"machine": machine, **result}, indent=1), encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
