"""Every benchmark at its default (small) size: `python -m bench.all [--image-size 64]`.

Runs serving, bf16 and training in turn on one shared work folder, so the model
they measure is trained once, and prints each one's targets at the end. At the
default 64 px this takes about 6 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time

from bench import bf16, common, serving, training


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__)
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = {}
    with common.workdir(args.workdir) as root:
        shared = ["--image-size", str(args.image_size), "--workdir", str(root)]
        shared += ["--out", str(args.out)]
        for name, module in (("serving", serving), ("bf16", bf16), ("training", training)):
            print(f"\n===== bench.{name} =====", flush=True)
            t = time.perf_counter()
            results[name] = module.main(shared)
            print(f"===== bench.{name}: {time.perf_counter() - t:.0f}s =====", flush=True)
    print(f"\nall benchmarks: {time.perf_counter() - started:.0f}s; results in {args.out}")
    for name, payload in results.items():
        for target in payload.get("targets", []):
            print(f"  {name}: [{'met' if target['met'] else 'NOT met'}] {target['target']}")
        if name == "bf16":
            summary = payload["summary"]
            print(
                f"  bf16: speedup {summary['best_batch_speedup']}x, agreement "
                f"{summary['top1_agreement']:.2%}: "
                f"{'qualifies' if summary['qualifies'] else 'does not qualify'}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
