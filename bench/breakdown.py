"""Where one request's time goes: `python -m bench.breakdown [--image-size 64]`.

Wall-clock ratios are noisy on a shared machine; CPU time spent per request is not (it
only counts what this work itself ran). This sends one JPEG per request from one client,
sequentially, over REST and gRPC to one `imgclf serve`, and reads the server's CPU time
per thread from /proc/<pid>/task/<tid>/schedstat (nanoseconds on CPU) before and after.
Threads are grouped by their Python name (read with py-spy when it is installed, else
by the kernel's thread name), so the table says how much CPU the HTTP loop, the request
threads, the batcher and TensorFlow's pools spend on one request. The in-process call of
`serving_default` at batch 1 is the floor. Context switches per request count the
thread hand-offs (each a wake-up that waits for a core and the GIL under load).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from bench import common
from bench.load import grpc_client, rest_client
from bench.servers import ServerProcess, start_imgclf
from bench.swap import publish_copy

NAME = "breakdown"


def _threads(pid: int) -> dict[int, tuple[str, int, int]]:
    """tid -> (kernel name, ns on CPU, context switches voluntary + involuntary)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            ns = int((task / "schedstat").read_text().split()[0])
            status = (task / "status").read_text()
        except OSError:
            continue
        switches = sum(
            int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line
        )
        out[int(task.name)] = (name, ns, switches)
    return out


def _python_names(pid: int) -> dict[int, str]:
    """tid -> Python thread name, from `py-spy dump --json` (empty when py-spy is absent)."""
    if shutil.which("py-spy") is None:
        return {}
    try:
        text = subprocess.run(
            ["py-spy", "dump", "--json", "--pid", str(pid)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    names = {}
    for thread in json.loads(text):
        if thread.get("os_thread_id"):
            names[int(thread["os_thread_id"])] = thread.get("thread_name") or "?"
    return names


def _group(name: str) -> str:
    """Fold numbered pools into one row (waitress-3 -> waitress-*, tf_inter_op...)."""
    base = name.rstrip("0123456789").rstrip("-_ ")
    return base + "*" if base != name else name


def measure(
    server: ServerProcess, call, requests: int, names: dict[int, str]
) -> tuple[dict[str, float], dict]:
    pid = server.process.pid
    for i in range(20):  # warm: connections, first-call paths
        call(i)
    before = _threads(pid)
    client_cpu = time.process_time()
    latencies = []
    for i in range(requests):
        start = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - start)
    client_cpu = time.process_time() - client_cpu
    after = _threads(pid)
    per_thread: dict[str, float] = defaultdict(float)
    switches = 0
    for tid, (kname, ns, sw) in after.items():
        _, ns0, sw0 = before.get(tid, (kname, 0, 0))
        if ns - ns0 > 0:
            per_thread[_group(names.get(tid, kname))] += (ns - ns0) / 1e6 / requests
        switches += sw - sw0
    total = sum(per_thread.values())
    summary = {
        "server_cpu_ms": round(total, 3),
        "client_cpu_ms": round(1000 * client_cpu / requests, 3),
        "server_context_switches": round(switches / requests, 1),
        **common.percentiles(latencies),
    }
    return dict(sorted(per_thread.items(), key=lambda kv: -kv[1])), summary


def in_process(version_dir: Path, image: bytes, calls: int) -> dict:
    """serving_default at batch 1 in this process: wall and CPU per call (the floor)."""
    import tensorflow as tf

    from imgclf import contract

    serve = tf.saved_model.load(str(version_dir)).signatures[contract.SERVING_DEFAULT]
    x = tf.constant([image])

    def call() -> None:
        serve(**{contract.INPUT_IMAGE_BYTES: x})[contract.OUTPUT_PROBABILITIES].numpy()

    for _ in range(10):
        call()
    cpu = time.process_time()
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    return {"cpu_ms": round(1000 * cpu / calls, 3), **common.percentiles(latencies)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.breakdown", description=__doc__)
    common.add_common_arguments(parser)
    parser.add_argument("--requests", type=int, default=300, help="requests per protocol")
    parser.add_argument("--env", action="append", default=[], metavar="IMGCLF_X=VALUE")
    args = parser.parse_args(argv)
    env = {"IMGCLF_POLL_INTERVAL": "0.5", **dict(e.split("=", 1) for e in args.env)}
    machine = common.machine()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_average']}")
    results: dict = {"machine": machine, "image_size": args.image_size, "env": env}
    with common.workdir(args.workdir) as root:
        version_dir, data = common.prepare_model(root, args.image_size)
        images = common.jpeg_images(data, 8)
        results["in_process_batch1"] = in_process(version_dir, images[0], args.requests)
        print(f"in-process batch 1: {results['in_process_batch1']}")
        model_dir = root / f"breakdown-{args.image_size}px"
        shutil.rmtree(model_dir, ignore_errors=True)
        publish_copy(model_dir, version_dir)
        rest_port, grpc_port = common.free_port(), common.free_port()
        server = start_imgclf(model_dir, rest_port, grpc_port, root / "logs" / "breakdown.log", env)
        try:
            calls = {
                "rest": rest_client(rest_port, common.MODEL_NAME, images)(),
                "grpc": grpc_client(grpc_port, common.MODEL_NAME, images)(),
            }
            for call in calls.values():  # both pools exist before their threads are named
                call(0)
            names = _python_names(server.process.pid)
            for protocol, call in calls.items():
                threads, summary = measure(server, call, args.requests, names)
                results[protocol] = {**summary, "threads_cpu_ms": threads}
                print(f"\n{protocol}: {summary}")
                for name, ms in threads.items():
                    if ms >= 0.05:
                        print(f"  {name:<28} {ms:7.2f} ms CPU / request")
        finally:
            server.stop()
    results["load_average_end"] = common.load_average()
    path = args.out / f"{NAME}-{args.image_size}px.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {path}")
    return results


if __name__ == "__main__":
    main()
