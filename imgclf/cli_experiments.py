"""`imgclf search | kfold`: hyperparameter search and cross-validation as queue jobs.

Both build a job document (config file, `--set` overrides, then the flags below),
submit it like `imgclf submit`, and with `--follow` show progress until it ends and
print the ranked trials or the per-fold table.
"""

from __future__ import annotations

import argparse
from typing import Any

from imgclf.settings import Settings


def _submit(args: argparse.Namespace, settings: Settings, kind: str, flags: dict) -> int:
    from imgclf.cli_json import emit_json
    from imgclf.cli_progress import follow, print_record
    from imgclf.cli_queue import say_who_listens
    from imgclf.config import load_config_file, parse_overrides
    from imgclf.jobs.service import celery_sender, submit_job
    from imgclf.jobs.store import open_store

    document = load_config_file(args.config) if args.config else {}
    document.update(parse_overrides(args.set or []))
    document.update({k: v for k, v in flags.items() if v is not None})
    document.update({"kind": kind, "name": args.name, "data": args.data})
    if args.idempotency_key:
        document["idempotency_key"] = args.idempotency_key
    store = open_store(settings.result_backend, settings.key_prefix)
    record = submit_job(document, settings=settings, store=store, send=celery_sender(settings))
    if args.json and not args.follow:
        emit_json(record)
        return 0
    print(f"job {record['id']} {record['status']} ({kind})")
    say_who_listens(settings)
    if not args.follow:
        return 0
    final = follow(store, record["id"], queue=settings.queue)
    if args.json:
        emit_json(final)
        return 0 if final["status"] == "succeeded" else 1
    print_result(final)
    print_record(final)
    return 0 if final["status"] == "succeeded" else 1


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    flags = {
        "tuner": args.tuner,
        "objective": args.objective,
        "max_trials": args.max_trials,
        "trial_epochs": args.trial_epochs,
        "max_search_seconds": args.max_seconds,
        "then_train": True if args.then_train else None,
    }
    return _submit(args, settings, "search", flags)


def cmd_kfold(args: argparse.Namespace, settings: Settings) -> int:
    flags = {
        "folds": args.folds,
        "then_train": True if args.then_train else None,
        "fold_noise_gate": True if args.fold_noise_gate else None,
    }
    return _submit(args, settings, "kfold", flags)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def search_table(result: dict) -> list[str]:
    """The ranked trials as text lines, best first."""
    lines = [
        f"{'rank':>4}  {'trial':<6} {result['objective']:>12}  {'val_acc':>7}  {'epochs':>6}  "
        f"{'status':<9}  hyperparameters"
    ]
    for row in result["trials"]:
        objective = "-" if row["objective"] is None else f"{row['objective']:.4f}"
        accuracy = "-" if row["val_accuracy"] is None else f"{row['val_accuracy']:.1%}"
        values = " ".join(f"{k}={_value(v)}" for k, v in row["hyperparameters"].items())
        lines.append(
            f"{row['rank'] or '-':>4}  {row['trial_id']:<6} {objective:>12}  {accuracy:>7}  "
            f"{row['epochs']:>6}  {row['status']:<9}  {values}"
            + (f"  ({row['error']})" if row["error"] else "")
        )
    return lines


def kfold_table(result: dict) -> list[str]:
    """Per-fold metrics, then mean ± standard deviation."""
    lines = [
        f"{'fold':>4}  {'train':>5}  {'val':>4}  {'held-out':>8}  {'accuracy':>8}  "
        f"{'macro F1':>8}  {'loss':>7}  best epoch"
    ]
    for fold in result["per_fold"]:
        m, c = fold["metrics"], fold["counts"]
        lines.append(
            f"{fold['fold']:>4}  {c['train']:>5}  {c['val']:>4}  {c['held_out']:>8}  "
            f"{m['accuracy']:>8.1%}  {m['macro_f1']:>8.3f}  {m['loss']:>7.3f}  "
            f"{fold['best_epoch']}/{fold['epochs']}"
        )
    mean, std = result["mean"], result["std"]
    if mean:

        def spread(name: str, shown: str) -> str:
            value = std.get(name)
            return f"{mean[name]:{shown}}" + ("" if value is None else f" ± {value:{shown}}")

        lines.append(
            f"mean over {result['completed']} folds: accuracy {spread('accuracy', '.1%')}, "
            f"macro F1 {spread('macro_f1', '.3f')}, loss {spread('loss', '.3f')} "
            "(± = standard deviation across folds)"
        )
    return lines


def print_result(record: dict) -> None:
    result = record.get("result")
    if not result:
        return
    if record.get("kind") == "search":
        print("\n".join(search_table(result)))
        if result.get("best_config"):
            best = result["best"]["hyperparameters"]
            print("best config: " + ", ".join(f"{k}={_value(v)}" for k, v in best.items()))
    elif record.get("kind") == "kfold":
        print("\n".join(kfold_table(result)))
        if result.get("curves"):
            print(f"learning curves: {result['curves']}")


def _common(parser: argparse.ArgumentParser, document: str) -> None:
    parser.add_argument("--data", required=True, help="data path under IMGCLF_DATA_ROOTS")
    parser.add_argument(
        "--name", required=True, help="model name (the job's name; --then-train publishes to it)"
    )
    parser.add_argument("--config", help=f"JSON or YAML job document ({document})")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE")
    parser.add_argument("--idempotency-key", help="same key -> same job")
    parser.add_argument("--then-train", action="store_true", help="then train and publish")
    parser.add_argument("--follow", action="store_true", help="show progress until it ends")
    parser.add_argument("--json", action="store_true", help="print the job record as JSON")


def add_commands(sub: argparse._SubParsersAction) -> None:
    search = sub.add_parser(
        "search", help="queue a hyperparameter search (Keras Tuner) over a declared space"
    )
    _common(search, "training fields, search_space, tuner, ...")
    search.add_argument("--tuner", choices=["hyperband", "random", "bayesian"])
    search.add_argument("--objective", choices=["val_loss", "val_accuracy"])
    search.add_argument("--max-trials", type=int)
    search.add_argument("--trial-epochs", type=int, help="epochs per trial, both phases")
    search.add_argument("--max-seconds", type=int, help="start no trial after this many seconds")
    search.set_defaults(func=cmd_search)

    kfold = sub.add_parser("kfold", help="queue a stratified K-fold cross-validation of a config")
    _common(kfold, "training fields, folds, ...; search_space is refused")
    kfold.add_argument("--folds", type=int, help="K (default 5)")
    kfold.add_argument(
        "--fold-noise-gate",
        action="store_true",
        help="with --then-train: beat stable by more than the fold-to-fold noise",
    )
    kfold.set_defaults(func=cmd_kfold)
