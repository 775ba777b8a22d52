"""The `imgclf` command. Builds the one Settings object and hands it down.

TensorFlow is imported only inside the commands that need it, so `imgclf --help`
is instant and the server's commands never load the trainer.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from imgclf import __version__, contract
from imgclf.cli_errors import (
    CommandParser,
    check_port_free,
    explain,
    port,
    positive_int,
    unit_interval,
)
from imgclf.cli_json import emit_json
from imgclf.settings import Settings


def _quiet_tensorflow() -> None:
    # Before TensorFlow is imported: C++ INFO/WARNING lines and CUDA noise bury the output.
    from imgclf.tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()


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
    audit = result.card.get("audit", {}).get("summary")
    if audit:
        print(
            f"data audit: {audit['test_with_train_copy']} test image(s) with a near-copy in "
            f"training, {audit['duplicate_groups']} duplicate group(s), "
            f"{audit['dropped_from_train']} training copies dropped"
        )
    print(f"report: {result.report}")


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf.config import load_config_file, parse_config, parse_overrides
    from imgclf.repository import validate_model_name
    from imgclf.trainer.data import check_data_path

    validate_model_name(args.name)
    document = load_config_file(args.config) if args.config else {}
    config = parse_config(document, **parse_overrides(args.set or []))
    check_data_path(args.data)  # before TensorFlow's seconds of start-up
    _quiet_tensorflow()
    from datetime import UTC, datetime

    from imgclf.trainer.run import train_and_export

    model_dir = Path(args.model_dir) if args.model_dir else settings.model_dir
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    run_dir = Path(args.run_dir) if args.run_dir else settings.runs_dir() / args.name / run_id
    if not args.json:
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
        verbose=0 if args.json else 1 if sys.stdout.isatty() else 2,
        gate=gate,
    )
    if args.json:
        emit_json(
            {
                "name": result.name,
                "version": result.version,
                "version_dir": str(result.version_dir),
                "metrics": result.metrics,
                "diagnosis": result.diagnosis,
                "parity": result.parity,
                "report": str(result.report),
            }
        )
    else:
        _print_result(result)
    return 0


def cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf import registry, repository
    from imgclf.prediction import Prediction, card_min_score

    model_dir = Path(args.model_dir) if args.model_dir else settings.model_dir
    version = registry.repository_version(
        model_dir,
        args.name,
        policy=settings.version_policy,
        specific=settings.serve_versions,
        version=args.version,
        alias=args.label,
    )
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
        min_score = card_min_score(loaded.card) if args.min_score is None else args.min_score
        answer = Prediction(args.name, version, probabilities, loaded.labels, min_score)
        top = answer.top_k(args.top_k)[0]
        label, score = answer.labels()[0]
        results.append(
            {
                "image": image,
                "label": label,
                "score": score,
                "top": [{"label": n, "score": s} for n, s in top],
            }
        )
        if not args.json:
            shown = ", ".join(f"{n} {s:.3f}" for n, s in top)
            print(f"{image}: " + (f"{label} (top: {shown})" if label != top[0][0] else shown))
    if args.json:
        emit_json({"model": args.name, "version": version, "results": results})
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
            "model_dir": Path(args.model_dir) if args.model_dir else None,
            "rest_port": args.rest_port,
            "grpc_port": args.grpc_port,
            "host": args.host,
        }.items()
        if v is not None
    }
    settings = settings.model_copy(update=overrides)
    _check_serving_setup(settings)
    _quiet_tensorflow()
    from imgclf.server.app import serve

    serve(settings)
    return 0


def _check_serving_setup(settings: Settings) -> None:
    """Say what is wrong before binding anything: ports taken, no models to serve."""
    from imgclf import repository
    from imgclf.errors import RepositoryError

    check_port_free(settings.host, settings.rest_port, "--rest-port", "IMGCLF_REST_PORT")
    check_port_free(settings.host, settings.grpc_port, "--grpc-port", "IMGCLF_GRPC_PORT")
    if not settings.model_dir.is_dir():
        raise RepositoryError(
            f"model directory {settings.model_dir} does not exist: train a model first "
            "('imgclf train --data DIR --name NAME'), or point --model-dir / "
            "IMGCLF_MODEL_DIR at your repository"
        )
    if not repository.list_models(settings.model_dir):
        print(
            f"imgclf: note: no models in {settings.model_dir} yet; /readyz answers 503 until "
            "one is published ('imgclf train' or 'imgclf submit' with this model directory)",
            file=sys.stderr,
            flush=True,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="imgclf", description="Fine-tune ResNet-50 image classifiers and serve them."
    )
    parser.add_argument("--version", action="version", version=f"imgclf {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show Python tracebacks of unexpected errors"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    train.add_argument("--json", action="store_true", help="print the result as JSON")
    train.set_defaults(func=cmd_train)

    predict = sub.add_parser("predict", help="classify image files with an exported version")
    predict.add_argument("--model-dir", help="model repository (default $IMGCLF_MODEL_DIR)")
    predict.add_argument("--name", required=True)
    target = predict.add_mutually_exclusive_group()
    target.add_argument(
        "--version",
        type=int,
        help="default: the version a server would answer with (stable, else the newest)",
    )
    target.add_argument("--label", help="the version this label (stable, canary, ...) points at")
    predict.add_argument(
        "--top-k", type=positive_int, default=contract.DEFAULT_TOP_K, help="labels shown per image"
    )
    predict.add_argument(
        "--min-score",
        type=unit_interval,
        default=None,
        help="answer 'unknown' when the top score is below this (0-1; default: the model "
        "card's min_score)",
    )
    predict.add_argument("--json", action="store_true", help="print JSON")
    predict.add_argument("images", nargs="+")
    predict.set_defaults(func=cmd_predict)

    from imgclf.demo import add_arguments as demo_arguments

    demo = sub.add_parser("demo", help="the whole loop on generated data (embedded defaults)")
    demo_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="serve REST (8501) and gRPC (8500) from MODEL_DIR")
    serve.add_argument("--model-dir", help="model repository (default $IMGCLF_MODEL_DIR)")
    serve.add_argument("--rest-port", type=port, help="0-65535 (default $IMGCLF_REST_PORT)")
    serve.add_argument("--grpc-port", type=port, help="0-65535 (default $IMGCLF_GRPC_PORT)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.set_defaults(func=cmd_serve)

    from imgclf import cli_models, cli_queue

    cli_queue.add_commands(sub)
    from imgclf import cli_experiments

    cli_experiments.add_commands(sub)
    cli_models.add_commands(sub)
    from imgclf import cli_audit

    cli_audit.add_commands(sub)
    from imgclf import cli_completion

    cli_completion.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; expected failures become one line on stderr and a non-zero exit."""
    from pydantic import ValidationError

    from imgclf.cli_errors import environment_error

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"imgclf: error: {environment_error(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("absl", "tensorflow"):  # SavedModel writing logs pages of INFO lines
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))
    try:
        return args.func(args, settings)
    except KeyboardInterrupt:
        print("imgclf: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        message = explain(exc, settings.result_backend)
        if message is None:
            print(
                f"imgclf: error: unexpected {type(exc).__name__}: {exc} "
                "(a bug: run again with --debug for the traceback, and report it)",
                file=sys.stderr,
            )
            return 1
        print(f"imgclf: error: {' '.join(message.split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
