"""Serving benchmark: `python -m bench.serving [--image-size 64]`.

1. The limit: the exported SavedModel's `serving_default` (JPEG bytes in) called
   in-process at batch sizes 1-32: images per second and latency per call.
2. imgclf REST and gRPC in one `imgclf serve` process, and the peer (the same
   SavedModel under LitServe), each with 1, 4, 16 and 32 closed-loop clients sending
   one JPEG per request over loopback. Levels alternate between the servers so slow
   drift in the machine's load hits all of them alike. Each figure is reported as a
   ratio to the in-process figure at the matching batch size (N clients can at most
   form batches of N).
3. Cold start (process start to ready, and to the first answer) of both servers.
4. A version swap under load: 16 gRPC clients while version 2 is published; the
   time from publishing to the first answer from version 2, and the error count.

Each server and its clients share the machine's cores: that is the setting the
targets are about (one box, no separate load generator). The servers not being
measured are frozen (SIGSTOP) meanwhile, and all of them during the in-process
calls: an idle LitServe polls its queues and took 11-15% of a core, a tax on whatever
else was measured, but never on itself (`python -m bench.idle_tax`).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import statistics
import time

from bench import common
from bench.load import grpc_client, peer_client, rest_client, run_load
from bench.servers import ServerProcess, b64, first_prediction, start_imgclf, start_peer
from bench.swap import measure_swap, publish_copy

NAME = "serving"
DEFAULT_CLIENTS = (1, 4, 16, 32)
DEFAULT_BATCHES = (1, 4, 8, 16, 32)
DISTINCT_IMAGES = 32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    common.add_common_arguments(parser)
    parser.add_argument(
        "--clients", default=",".join(map(str, DEFAULT_CLIENTS)), help="concurrency levels"
    )
    parser.add_argument(
        "--batches", default=",".join(map(str, DEFAULT_BATCHES)), help="in-process batch sizes"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="wall-time cap per level")
    parser.add_argument(
        "--rounds", type=int, default=2, help="repeat every measurement; medians are reported"
    )
    parser.add_argument("--requests", type=int, default=2000, help="request cap per level")
    parser.add_argument(
        "--swap-seconds",
        type=float,
        default=14.0,
        help="length of the swap-under-load run (0 skips it)",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the LitServe peer")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="IMGCLF_X=VALUE",
        help="also serve a second imgclf with this setting (repeatable: all go to it) and "
        "measure it over REST as 'variant', alternating with the others: an A/B in one run",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="IMGCLF_X=VALUE",
        help="extra setting for imgclf serve (repeatable), e.g. IMGCLF_BATCH_TIMEOUT_MS=20",
    )
    return parser.parse_args(argv)


def measure_in_process(
    serve, images: list[bytes], batches: list[int], seconds: float
) -> list[dict]:
    """serving_default on JPEG bytes: the work a server does per image, minus the protocol."""
    import tensorflow as tf

    from imgclf import contract

    rows = []
    for batch in batches:
        x = tf.constant((images * (batch // len(images) + 1))[:batch])

        def call(x=x) -> None:
            serve(**{contract.INPUT_IMAGE_BYTES: x})[contract.OUTPUT_PROBABILITIES].numpy()

        cpu = _own_cpu()
        durations = common.time_calls(
            call, warmup=3, min_calls=5, max_calls=100_000, max_seconds=seconds
        )
        cpu = _own_cpu() - cpu
        mean = sum(durations) / len(durations)
        rows.append(
            {
                "batch": batch,
                "calls": len(durations),
                "images_per_s": batch / mean,
                **common.percentiles(durations),
                # includes the 3 warmup calls: a slight overestimate
                "cpu_ms_per_image": 1000 * cpu / (batch * (len(durations) + 3)),
            }
        )
    return rows


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


_BATCH_SERIES = {
    "imgclf_batch_size_sum": "images",
    "imgclf_batch_size_count": "batches",
    "imgclf_batch_gather_seconds_sum": "open_s",
    "imgclf_batch_run_seconds_sum": "model_s",
}


def _batch_totals(rest_port: int) -> dict[str, float]:
    """imgclf's batch histograms so far (images, model calls, seconds batches stayed open,
    seconds in the model), read from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection(common.LOOPBACK, rest_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    totals = dict.fromkeys(_BATCH_SERIES.values(), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _BATCH_SERIES:
                totals[_BATCH_SERIES[sample.name]] += sample.value
    return totals


def measure_level(
    protocol: str, make, clients: int, server: ServerProcess, args: argparse.Namespace
) -> dict:
    """One load level; adds CPU per image (server and clients), and from imgclf's metrics
    its mean batch, the share of time its model ran and how long its batches stayed open."""
    marks: dict[str, float | tuple] = {}
    rest_port = server.rest_port

    def on_start(_t0: float) -> None:
        marks["server"] = server.cpu_seconds()
        marks["client"] = _own_cpu()
        if rest_port is not None:
            marks["batches"] = _batch_totals(rest_port)

    result = run_load(
        make, clients, max_requests=args.requests, max_seconds=args.seconds, on_start=on_start
    )
    images = max(1, result.requests + result.errors)
    row = {
        "protocol": protocol,
        **result.summary(),
        "server_cpu_ms_per_image": 1000 * (server.cpu_seconds() - marks["server"]) / images,
        "client_cpu_ms_per_image": 1000 * (_own_cpu() - marks["client"]) / images,
        "load_average": common.load_average(),
    }
    if rest_port is not None:
        before, after = marks["batches"], _batch_totals(rest_port)
        grew = {key: after[key] - before[key] for key in after}
        calls = grew["batches"]
        row["mean_batch"] = grew["images"] / calls if calls else None
        # The share of the level's time the model call ran, and how long batches stayed open.
        row["model_busy"] = grew["model_s"] / result.seconds if result.seconds else None
        row["batch_open_ms"] = 1000 * grew["open_s"] / calls if calls else None
    return row


def _median_rows(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """One row per `keys` value: the median of every number over the rounds, errors summed."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for group in groups.values():
        merged = dict(group[0])
        for field in group[0]:
            values = [r.get(field) for r in group]
            if field in keys or not all(isinstance(v, int | float) for v in values):
                continue
            if field in ("errors", "requests", "calls"):
                merged[field] = sum(values)
            else:
                merged[field] = round(float(statistics.median(values)), 3)
        merged["rounds"] = len(group)
        if "error_samples" in merged:
            merged["error_samples"] = [e for r in group for e in r["error_samples"]][:3]
        out.append(merged)
    return out


def add_ratios(in_process: list[dict], rows: list[dict]) -> None:
    """Each server figure over the in-process one at the matching batch (N clients can form
    batches of at most N), over the in-process best, and over the peer at the same load."""
    best = max(r["images_per_s"] for r in in_process)
    peer = {r["clients"]: r for r in rows if r["protocol"] == "peer"}
    for row in rows:
        fitting = [r for r in in_process if r["batch"] <= row["clients"]] or in_process[:1]
        match = max(fitting, key=lambda r: r["batch"])
        row["matching_batch"] = match["batch"]
        row["throughput_vs_matching"] = common.ratio(row["images_per_s"], match["images_per_s"])
        row["throughput_vs_best"] = common.ratio(row["images_per_s"], best)
        for p in ("p50", "p95", "p99"):
            row[f"{p}_vs_matching"] = common.ratio(row[f"{p}_ms"], match[f"{p}_ms"])
        row["cpu_vs_matching"] = common.ratio(
            row["server_cpu_ms_per_image"], match["cpu_ms_per_image"]
        )
        other = peer.get(row["clients"])
        if other is not None and row["protocol"] != "peer":
            row["throughput_vs_peer"] = common.ratio(row["images_per_s"], other["images_per_s"])
            row["p99_vs_peer"] = common.ratio(row["p99_ms"], other["p99_ms"])


@contextlib.contextmanager
def _alone(servers: list[ServerProcess], measured: ServerProcess | None = None):
    """Freeze every server except `measured` while the block runs."""
    others = [s for s in servers if s is not measured]
    for server in others:
        server.pause()
    try:
        yield
    finally:
        for server in others:
            server.resume()


def _idle_cpu(servers: list, seconds: float = 2.0) -> dict[str, float]:
    """CPU share each idle server burns (pollers, busy loops): noise for the others."""
    before = {s.name: s.cpu_seconds() for s in servers}
    time.sleep(seconds)
    return {s.name: round((s.cpu_seconds() - before[s.name]) / seconds, 3) for s in servers}


def evaluate_targets(in_process: list[dict], rows: list[dict], image_size: int) -> list[dict]:
    """The targets of issue #11: at 16 and 32 clients, throughput >= the peer's and p99 <=
    the peer's; throughput at 16+ clients >= 0.80 (64 px) or 0.90 (224 px) of the in-process
    best batch; 1-client p50 <= in-process batch-1 p50 + 5 ms."""
    batch1 = next((r for r in in_process if r["batch"] == 1), None)
    share = 0.90 if image_size >= 224 else 0.80
    peer = {r["clients"]: r for r in rows if r["protocol"] == "peer"}
    targets = []
    for protocol in ("rest", "grpc"):
        mine = {r["clients"]: r for r in rows if r["protocol"] == protocol}
        high = [r["throughput_vs_best"] for c, r in mine.items() if c >= 16]
        if high:
            targets.append(
                {
                    "target": f"{protocol}: throughput at 16+ clients >= {share:.2f} x "
                    "in-process best",
                    "value": min(high),
                    "met": min(high) >= share,
                }
            )
        if 1 in mine and batch1 is not None:
            p50, limit = mine[1]["p50_ms"], batch1["p50_ms"] + 5.0
            targets.append(
                {
                    "target": f"{protocol}: 1-client p50 <= in-process batch-1 p50 + 5 ms "
                    f"({limit:.1f} ms)",
                    "value": p50,
                    "met": p50 <= limit,
                }
            )
        levels = sorted(c for c in set(mine) & set(peer) if c >= 16)
        if levels:
            tput = {
                c: common.ratio(mine[c]["images_per_s"], peer[c]["images_per_s"]) for c in levels
            }
            p99 = {c: common.ratio(mine[c]["p99_ms"], peer[c]["p99_ms"]) for c in levels}
            targets.append(
                {
                    "target": f"{protocol}: throughput / peer >= 1 at 16+ clients",
                    "value": tput,
                    "met": all(t >= 1 for t in tput.values()),
                }
            )
            targets.append(
                {
                    "target": f"{protocol}: p99 / peer <= 1 at 16+ clients",
                    "value": p99,
                    "met": all(p <= 1 for p in p99.values()),
                }
            )
    return targets


def plot(in_process: list[dict], rows: list[dict]):
    figure, (tput, p99) = common.new_figure(2)
    for protocol, style in (("rest", "o-"), ("grpc", "s-"), ("variant", "d-."), ("peer", "^--")):
        mine = sorted((r for r in rows if r["protocol"] == protocol), key=lambda r: r["clients"])
        if not mine:
            continue
        label = {"peer": "LitServe (peer)", "variant": "imgclf REST, variant"}.get(
            protocol, f"imgclf {protocol.upper()}"
        )
        clients = [r["clients"] for r in mine]
        tput.plot(clients, [r["images_per_s"] for r in mine], style, label=label)
        p99.plot(clients, [r["p99_ms"] for r in mine], style, label=label)
    batches = [r["batch"] for r in in_process]
    tput.plot(
        batches, [r["images_per_s"] for r in in_process], "k:", label="in-process (batch = N)"
    )
    p99.plot(batches, [r["p99_ms"] for r in in_process], "k:", label="in-process call (batch = N)")
    tput.set(xscale="log", xlabel="concurrent clients / batch size", ylabel="images / s")
    p99.set(xscale="log", yscale="log", xlabel="concurrent clients / batch size", ylabel="p99 ms")
    tput.set_title("throughput")
    p99.set_title("p99 latency")
    for axis in (tput, p99):
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    return figure


IN_PROCESS_COLUMNS = [
    ("batch", "batch"),
    ("images_per_s", "img/s"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("cpu_ms_per_image", "CPU ms/img"),
]
SERVER_COLUMNS = [
    ("protocol", "server"),
    ("clients", "clients"),
    ("images_per_s", "img/s"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("errors", "err"),
    ("mean_batch", "batch"),
    ("model_busy", "busy"),
    ("batch_open_ms", "open ms"),
    ("server_cpu_ms_per_image", "srv CPU ms/img"),
    ("throughput_vs_matching", "tput/inproc[N]"),
    ("throughput_vs_best", "tput/inproc best"),
    ("p50_vs_matching", "p50/inproc[N]"),
    ("p99_vs_matching", "p99/inproc[N]"),
    ("throughput_vs_peer", "tput/peer"),
    ("p99_vs_peer", "p99/peer"),
]


SHOWN_SETTINGS = ("max_batch_size", "batch_timeout_ms", "server_threads", "poll_interval")


def imgclf_settings(env: dict[str, str]) -> str:
    """The serving settings the server ran with: the real defaults with `env` applied, so
    the recorded string cannot drift from the code (it was once hard-coded, and wrong)."""
    from imgclf.settings import Settings

    overrides = {k.removeprefix("IMGCLF_").lower(): v for k, v in env.items()}
    settings = Settings.model_validate({**Settings().model_dump(), **overrides})
    return ", ".join(f"{name} {getattr(settings, name)}" for name in SHOWN_SETTINGS)


def measure_servers(args: argparse.Namespace, root, env: dict) -> dict:
    """Start imgclf and the peer on one model, then measure in-process, every client
    level (alternating servers, in rounds), and finally the swap under load."""
    clients = [int(c) for c in args.clients.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    version_dir, data = common.prepare_model(root, args.image_size)
    images = common.jpeg_images(data, DISTINCT_IMAGES)
    model_dir = root / f"serve-{args.image_size}px"
    shutil.rmtree(model_dir, ignore_errors=True)
    publish_copy(model_dir, version_dir)
    import tensorflow as tf

    from imgclf import contract

    serve = tf.saved_model.load(str(version_dir)).signatures[contract.SERVING_DEFAULT]
    rest_port, grpc_port, peer_port = (common.free_port() for _ in range(3))
    servers: list[ServerProcess] = []
    in_rounds: list[dict] = []
    level_rounds: list[dict] = []
    try:

        def answering_imgclf(name: str, rest: int, grpc: int, overrides: dict) -> ServerProcess:
            """`imgclf serve` on the model, up to its first prediction (cold start)."""
            server = start_imgclf(
                model_dir,
                rest,
                grpc,
                root / "logs" / f"{name}.log",
                {"IMGCLF_POLL_INTERVAL": "0.5", **env, **overrides},
            )
            server.name = name
            servers.append(server)
            first_prediction(
                server,
                rest,
                f"/v1/models/{common.MODEL_NAME}:predict",
                {"instances": [b64(images[0])]},
            )
            return server

        imgclf = answering_imgclf("imgclf", rest_port, grpc_port, {})
        variant = None
        if args.variant:
            ports = common.free_port(), common.free_port()
            variant = answering_imgclf("imgclf-variant", *ports, _env(args.variant))
        peer = None
        if not args.no_peer:
            peer = start_peer(version_dir, peer_port, root / "logs" / "peer.log")
            servers.append(peer)
            first_prediction(peer, peer_port, "/predict", b64(images[0]))
        cold = {s.name: s.cold_start for s in servers}
        idle = _idle_cpu(servers)
        print(f"cold start (s): {cold}; idle CPU share: {idle}", flush=True)
        targets_by_protocol = {
            "rest": (rest_client(rest_port, common.MODEL_NAME, images), imgclf),
            "grpc": (grpc_client(grpc_port, common.MODEL_NAME, images), imgclf),
        }
        if variant is not None:
            make = rest_client(variant.rest_port, common.MODEL_NAME, images)
            targets_by_protocol["variant"] = (make, variant)
        if peer is not None:
            targets_by_protocol["peer"] = (peer_client(peer_port, images), peer)
        for round_ in range(args.rounds):
            with _alone(servers):
                rows = measure_in_process(serve, images[:8], batches, args.seconds / 2.5)
            in_rounds += [{**r, "round": round_} for r in rows]
            print(
                common.format_table(f"round {round_ + 1}: in-process", IN_PROCESS_COLUMNS, rows),
                flush=True,
            )
            for count in clients:
                for protocol, (make, server) in targets_by_protocol.items():
                    with _alone(servers, server):
                        row = measure_level(protocol, make, count, server, args)
                    level_rounds.append({**row, "round": round_})
                    print(
                        f"  {protocol:>4} x{count:<3} {row['images_per_s']:7.1f} img/s  "
                        f"p50 {row['p50_ms']:.1f}  p99 {row['p99_ms']:.1f} ms  "
                        f"errors {row['errors']}  load {row['load_average']}",
                        flush=True,
                    )
        if peer is not None:
            peer.stop()
        swap = (
            measure_swap(model_dir, grpc_port, images, args.swap_seconds)
            if args.swap_seconds > 0
            else None
        )
    finally:
        for server in servers:
            server.stop()
    return {
        "in_rounds": in_rounds,
        "level_rounds": level_rounds,
        "cold": cold,
        "idle": idle,
        "swap": swap,
    }


def report(args: argparse.Namespace, measured: dict) -> tuple[list, list, list]:
    """Medians over rounds, ratios and targets, printed; -> (in_process, rows, targets)."""
    in_process = _median_rows(measured["in_rounds"], ("batch",))
    rows = _median_rows(measured["level_rounds"], ("protocol", "clients"))
    order = ["rest", "grpc", "variant", "peer"]
    rows.sort(key=lambda r: (r["clients"], order.index(r["protocol"])))
    add_ratios(in_process, rows)
    targets = evaluate_targets(in_process, rows, args.image_size)
    print()
    print(
        common.format_table(f"in-process (median of {args.rounds})", IN_PROCESS_COLUMNS, in_process)
    )
    print()
    print(
        common.format_table(
            f"servers over loopback, 1 JPEG per request (median of {args.rounds})",
            SERVER_COLUMNS,
            rows,
        )
    )
    print(f"\ncold start (s): {measured['cold']}")
    print(f"version swap under load: {measured['swap']}")
    print("\ntargets:")
    for t in targets:
        print(f"  [{'met' if t['met'] else 'NOT met'}] {t['target']}: {t['value']}")
    return in_process, rows, targets


def _env(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    env = _env(args.env)
    started = time.perf_counter()
    machine = common.machine()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_average']}")
    with common.workdir(args.workdir) as root:
        measured = measure_servers(args, root, env)
    in_process, rows, targets = report(args, measured)
    payload = {
        "benchmark": NAME,
        "command": common.command_line("bench.serving", argv),
        "machine": machine,
        "load_average_end": common.load_average(),
        "image_size": args.image_size,
        "settings": {
            "imgclf": imgclf_settings({"IMGCLF_POLL_INTERVAL": "0.5", **env}),
            "imgclf_overrides": env,
            "variant_overrides": _env(args.variant),
            "peer": "LitServe 0.2, 1 inference worker, 1 API server, max_batch_size 32, "
            "batch_timeout 2 ms",
            "seconds_per_level": args.seconds,
            "requests_per_level": args.requests,
            "rounds": args.rounds,
        },
        "in_process": in_process,
        "servers": rows,
        "per_round": {"in_process": measured["in_rounds"], "servers": measured["level_rounds"]},
        "idle_cpu_share": measured["idle"],
        "cold_start": measured["cold"],
        "swap": measured["swap"],
        "targets": targets,
        "seconds": round(time.perf_counter() - started, 1),
    }
    path = common.write_results(NAME, payload, plot(in_process, rows), args.out)
    print(f"\nwrote {path} and {path.with_suffix('.png')} ({payload['seconds']:.0f}s)")
    return payload


if __name__ == "__main__":
    main()
