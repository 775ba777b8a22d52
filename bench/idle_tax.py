"""What an idle server costs whatever runs beside it: `python -m bench.idle_tax`.

The exported model's `serving_default` runs in this process at one batch size, in
rounds of three (the order rotates each round): with an idle LitServe (the serving
peer) beside it, with an idle `imgclf serve` beside it, and with both frozen
(SIGSTOP). No server gets a request while it is measured against. `bench.serving`
compares servers on one machine, so an idle one that takes CPU from the others bends
that comparison; this measures by how much, and is why `bench.serving` freezes the
servers it is not measuring.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

from bench import common
from bench.servers import b64, first_prediction, start_imgclf, start_peer
from bench.swap import publish_copy

NAME = "idle-tax"
SETTINGS = ("litserve_idle", "imgclf_idle", "both_frozen")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    common.add_common_arguments(parser)
    parser.add_argument("--batch", type=int, default=32, help="in-process batch size")
    parser.add_argument("--seconds", type=float, default=4.0, help="per setting and round")
    parser.add_argument("--rounds", type=int, default=4)
    return parser.parse_args(argv)


def _rate(serve, batch, seconds: float) -> float:
    """Images per second of back-to-back calls, after one untimed call."""
    serve(batch)
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        serve(batch)
        images += int(batch.shape[0])
    return images / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    machine = common.machine()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_average']}")
    with common.workdir(args.workdir) as root:
        version_dir, data = common.prepare_model(root, args.image_size)
        images = common.jpeg_images(data, args.batch)
        model_dir = root / f"idle-tax-{args.image_size}px"
        shutil.rmtree(model_dir, ignore_errors=True)
        publish_copy(model_dir, version_dir)
        import tensorflow as tf

        from imgclf import contract

        signature = tf.saved_model.load(str(version_dir)).signatures[contract.SERVING_DEFAULT]
        batch = tf.constant((images * args.batch)[: args.batch])

        def serve(x):
            return signature(**{contract.INPUT_IMAGE_BYTES: x})

        logs = root / "logs"
        peer_port, rest_port, grpc_port = (common.free_port() for _ in range(3))
        peer = start_peer(version_dir, peer_port, logs / "idle-tax-peer.log")
        imgclf = None
        try:
            first_prediction(peer, peer_port, "/predict", b64(images[0]))
            imgclf = start_imgclf(model_dir, rest_port, grpc_port, logs / "idle-tax.log", {})
            awake = {"litserve_idle": [peer], "imgclf_idle": [imgclf], "both_frozen": []}
            rounds = []
            for round_ in range(args.rounds):
                row = {}
                # The order rotates each round, so drift in the machine hits all three.
                for setting in SETTINGS[round_ % 3 :] + SETTINGS[: round_ % 3]:
                    for server in (peer, imgclf):
                        (server.resume if server in awake[setting] else server.pause)()
                    row[setting] = _rate(serve, batch, args.seconds)
                row = {k: row[k] for k in SETTINGS}
                rounds.append(row)
                print(
                    f"round {round_ + 1}: "
                    + ", ".join(f"{k} {v:.1f} img/s" for k, v in row.items()),
                    flush=True,
                )
        finally:
            try:
                peer.stop()
            finally:
                if imgclf is not None:
                    imgclf.stop()
    median = {k: statistics.median(r[k] for r in rounds) for k in SETTINGS}
    ratios = {k: common.ratio(median[k], median["both_frozen"]) for k in SETTINGS[:2]}
    per_round = {k: [r[k] / r["both_frozen"] for r in rounds] for k in SETTINGS[:2]}
    spread = {k: [min(v), max(v)] for k, v in per_round.items()}
    print(f"median img/s {median}; against both frozen: {ratios}; per round: {spread}")
    payload = {
        "benchmark": NAME,
        "command": common.command_line("bench.idle_tax", argv),
        "machine": machine,
        "image_size": args.image_size,
        "batch": args.batch,
        "rounds": rounds,
        "median_images_per_s": median,
        "vs_both_frozen": ratios,
        "vs_both_frozen_per_round_min_max": spread,
    }
    path = common.write_results(f"{NAME}-{args.image_size}px", payload, None, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
