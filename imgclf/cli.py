"""The `imgclf` command. Builds the one Settings object and hands it down.

TensorFlow is imported only inside the commands that need it, so `imgclf --help`
is instant and the server's commands never load the trainer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from imgclf.settings import Settings


class CliError(Exception):
    """A user mistake: printed without a traceback, exit status 2."""


def _quiet_tensorflow() -> None:
    # Must happen before TensorFlow is imported; C++ INFO/WARNING lines bury the output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _print_result(result) -> None:
    m = result.metrics
    print(f"\npublished {result.name} version {result.version} -> {result.version_dir}")
    top = {k: v for k, v in m.items() if k.startswith("top_")}
    print(
        f"test accuracy {m['accuracy']:.1%}  macro F1 {m['macro_f1']:.3f}  "
        + "  ".join(f"{k} {v:.1%}" for k, v in top.items())
    )
    print(f"diagnosis: {result.diagnosis['summary']}")
    for finding in result.diagnosis["findings"]:
        print(f"  - {finding['title']}: {finding['detail']}")
        for remedy in finding["remedies"][:3]:
            print(f"      * {remedy}")
    print(
        f"parity: {'passed' if result.parity['passed'] else 'FAILED'} "
        f"(max diff {result.parity['max_abs_diff']:.1e} on {result.parity['samples']} images)"
    )
    print(f"report: {result.report}")


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf.config import load_config_file, parse_config, parse_overrides
    from imgclf.repository import validate_model_name

    validate_model_name(args.name)
    document = load_config_file(args.config) if args.config else {}
    config = parse_config(document, **parse_overrides(args.set or []))
    _quiet_tensorflow()
    from datetime import UTC, datetime

    from imgclf.trainer.run import train_and_export

    model_dir = Path(args.model_dir) if args.model_dir else settings.model_dir
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    run_dir = Path(args.run_dir) if args.run_dir else settings.runs_dir() / args.name / run_id
    print(f"training {args.name!r} from {args.data} (run folder {run_dir})")
    from imgclf.trainer.promotion import GateRules, PromotionGate

    gate = (
        None
        if args.no_gate
        else PromotionGate(model_dir, args.name, GateRules(), keep_versions=settings.keep_versions)
    )
    result = train_and_export(
        config,
        data=args.data,
        name=args.name,
        model_dir=model_dir,
        run_dir=run_dir,
        keras_home=settings.keras_home,
        verbose=1 if sys.stdout.isatty() else 2,
        gate=gate,
    )
    _print_result(result)
    return 0


def cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf import repository

    model_dir = Path(args.model_dir) if args.model_dir else settings.model_dir
    version = args.version or repository.latest_version(model_dir, args.name)
    _quiet_tensorflow()
    from imgclf.artifact import BadImageError, LoadedVersion

    loaded = LoadedVersion(repository.version_path(model_dir, args.name, version))
    failures = 0
    results = []
    for image in args.images:
        try:
            probabilities = loaded.predict_bytes([Path(image).read_bytes()])
        except (OSError, BadImageError) as exc:
            failures += 1
            message = exc.strerror if isinstance(exc, OSError) else str(exc)
            print(f"{image}: error: {message}", file=sys.stderr)
            continue
        top = loaded.top_k(probabilities, args.top_k)[0]
        results.append({"image": image, "top": [{"label": p.label, "score": p.score} for p in top]})
        if not args.json:
            print(f"{image}: " + ", ".join(f"{p.label} {p.score:.3f}" for p in top))
    if args.json:
        print(json.dumps({"model": args.name, "version": version, "results": results}, indent=1))
    else:
        print(f"(model {args.name} version {version})")
    return 1 if failures else 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    _quiet_tensorflow()
    from imgclf.demo import run_demo

    return run_demo(args, settings)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    overrides = {
        k: v
        for k, v in {
            "model_dir": args.model_dir,
            "rest_port": args.rest_port,
            "grpc_port": args.grpc_port,
            "host": args.host,
        }.items()
        if v is not None
    }
    settings = settings.model_copy(update=overrides)
    _quiet_tensorflow()
    from imgclf.server.app import serve

    serve(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgclf", description="Fine-tune ResNet-50 image classifiers and serve them."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train locally (no queue) and publish a version")
    train.add_argument("--data", required=True, help="class folders, train/val/test, or a CSV")
    train.add_argument("--name", required=True, help="model name (letters, digits, - and _)")
    train.add_argument("--model-dir", help="model repository (default $IMGCLF_MODEL_DIR)")
    train.add_argument("--config", help="JSON or YAML training config")
    train.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override one config field"
    )
    train.add_argument("--run-dir", help="checkpoint folder; reuse it to resume a crashed run")
    train.add_argument(
        "--no-gate", action="store_true", help="publish without the promotion gate (no label)"
    )
    train.set_defaults(func=cmd_train)

    predict = sub.add_parser("predict", help="classify image files with an exported version")
    predict.add_argument("--model-dir", help="model repository (default $IMGCLF_MODEL_DIR)")
    predict.add_argument("--name", required=True)
    predict.add_argument("--version", type=int, help="default: the newest version")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--json", action="store_true", help="print JSON")
    predict.add_argument("images", nargs="+")
    predict.set_defaults(func=cmd_predict)

    from imgclf.demo import add_arguments as demo_arguments

    demo = sub.add_parser("demo", help="the whole loop on generated data (embedded defaults)")
    demo_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="serve REST (8501) and gRPC (8500) from MODEL_DIR")
    serve.add_argument("--model-dir", help="model repository (default $IMGCLF_MODEL_DIR)")
    serve.add_argument("--rest-port", type=int)
    serve.add_argument("--grpc-port", type=int)
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.set_defaults(func=cmd_serve)

    from imgclf import cli_models, cli_queue

    cli_queue.add_commands(sub)
    from imgclf import cli_experiments

    cli_experiments.add_commands(sub)
    cli_models.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("absl", "tensorflow"):  # SavedModel writing logs pages of INFO lines
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))
    from imgclf.errors import ImgclfError

    try:
        return args.func(args, settings)
    except (CliError, ImgclfError) as exc:
        print(f"imgclf: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imgclf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
