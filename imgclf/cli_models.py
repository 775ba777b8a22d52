"""`imgclf models | show | promote | rollback | delete`: the model registry for people."""

from __future__ import annotations

import argparse

from imgclf.cli_json import emit_json
from imgclf.settings import Settings


def _model_dir(args: argparse.Namespace, settings: Settings):
    from pathlib import Path

    return Path(args.model_dir) if getattr(args, "model_dir", None) else settings.model_dir


def model_summary(model_dir, name: str, settings: Settings) -> dict:
    """Versions, aliases, test accuracy, and `serving`: the version a server answers with."""
    from imgclf import registry, repository
    from imgclf.errors import RepositoryError

    aliases = registry.aliases(model_dir, name)
    try:
        serving = registry.repository_version(
            model_dir, name, policy=settings.version_policy, specific=settings.serve_versions
        )
    except RepositoryError:
        serving = None
    versions = []
    for version in repository.list_versions(model_dir, name):
        try:
            card = repository.read_model_card(repository.version_path(model_dir, name, version))
        except RepositoryError:
            card = {}
        test = (card.get("metrics") or {}).get("test") or {}
        versions.append(
            {
                "version": version,
                "labels": sorted(k for k, v in aliases.items() if v == version),
                "accuracy": test.get("accuracy"),
                "created_at": card.get("created_at"),
                "diagnosis": (card.get("diagnosis") or {}).get("status"),
            }
        )
    return {"name": name, "labels": aliases, "serving": serving, "versions": versions}


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf import repository
    from imgclf.errors import RepositoryError

    model_dir = _model_dir(args, settings)
    known = repository.list_models(model_dir)
    if args.name and args.name not in known:
        raise RepositoryError(
            f"no model {args.name!r} in {model_dir} (models: {', '.join(known) or 'none'}); "
            "pass --model-dir or set IMGCLF_MODEL_DIR if it lives elsewhere"
        )
    names = [args.name] if args.name else known
    summaries = [model_summary(model_dir, n, settings) for n in names]
    if args.json:
        emit_json(summaries)
        return 0
    for s in summaries:
        print(f"{s['name']}  labels {s['labels'] or '{}'}  serving v{s['serving']}")
        for v in s["versions"]:
            acc = "-" if v["accuracy"] is None else f"{v['accuracy']:.1%}"
            mark = "*" if v["version"] == s["serving"] else " "
            print(
                f"{mark} v{v['version']:<4} acc {acc:>6}  {','.join(v['labels']):<14} "
                f"{v['diagnosis'] or ''}  {v['created_at'] or ''}"
            )
    if not summaries:
        print(f"no models in {model_dir}")
    return 0


def verify_servable(model_dir, name: str, version: int) -> None:
    """Load the version and replay its golden files, as a server does before it lets a
    label move there: a label is never pointed at a version that cannot serve."""
    from imgclf import repository
    from imgclf.errors import Conflict, RepositoryError
    from imgclf.tf_quiet import import_tensorflow_quietly

    if version not in repository.list_versions(model_dir, name):
        raise RepositoryError(
            f"no version {version} of model {name!r} in {model_dir}; see 'imgclf models {name}'"
        )
    import_tensorflow_quietly()
    from imgclf.artifact import LoadedVersion, replay_golden

    try:
        replay_golden(LoadedVersion(repository.version_path(model_dir, name, version)))
    except (RepositoryError, RuntimeError, OSError, ValueError) as exc:
        raise Conflict(
            f"version {version} of {name!r} cannot serve ({exc}); the label is unchanged "
            "(--no-verify skips this check)"
        ) from None


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf import registry

    if args.verify:
        verify_servable(_model_dir(args, settings), args.name, args.version)
    aliases = registry.set_alias(
        _model_dir(args, settings), args.name, args.label, args.version, by="imgclf promote"
    )
    if args.json:
        emit_json(
            {"name": args.name, "label": args.label, "version": args.version, "labels": aliases}
        )
    else:
        print(f"{args.name}: {args.label} -> version {args.version}  (labels {aliases})")
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf import registry

    model_dir = _model_dir(args, settings)
    if args.verify:
        target = registry.rollback_target(model_dir, args.name, args.label)
        verify_servable(model_dir, args.name, target)
    version = registry.rollback(model_dir, args.name, args.label)
    if args.json:
        emit_json({"name": args.name, "label": args.label, "version": version})
    else:
        print(f"{args.name}: {args.label} rolled back to version {version}")
    return 0


def parse_ref(text: str) -> tuple[str, int | None]:
    """NAME or NAME:VERSION, as `show` and `delete` take it."""
    import argparse

    name, _, version = text.partition(":")
    if version and not version.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME or NAME:VERSION, got {text!r}")
    return name, int(version) if version else None


def card_summary(model_dir, name: str, version: int | None, settings: Settings) -> dict:
    """What a person wants from a version's model card, and where its report is; by
    default the version a server would answer with."""
    from imgclf import registry, repository

    version = registry.repository_version(
        model_dir,
        name,
        policy=settings.version_policy,
        specific=settings.serve_versions,
        version=version,
    )
    folder = repository.version_path(model_dir, name, version)
    card = repository.read_model_card(folder)
    report = folder / "report" / "report.html"
    metrics = (card.get("metrics") or {}).get("test") or {}
    data = card.get("data") or {}
    return {
        "name": name,
        "version": version,
        "path": str(folder),
        "labels": sorted(k for k, v in registry.aliases(model_dir, name).items() if v == version),
        "created_at": card.get("created_at"),
        "classes": data.get("classes"),
        "counts": data.get("counts"),
        "weights": (card.get("config") or {}).get("weights"),
        "test": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "diagnosis": (card.get("diagnosis") or {}).get("summary"),
        "calibration": {
            k: v
            for k, v in (card.get("calibration") or {}).items()
            if k in ("method", "temperature", "ece_before", "ece_after")
        }
        or None,
        "min_score": card.get("min_score"),
        "promotion": (card.get("promotion") or {}).get("decision"),
        "warnings": data.get("warnings") or [],
        "artifact_bytes": card.get("artifact_bytes"),
        "report": str(report) if report.is_file() else None,
    }


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    name, version = args.ref
    summary = card_summary(_model_dir(args, settings), name, version, settings)
    if args.json:
        emit_json(summary)
        return 0
    print(f"{summary['name']} version {summary['version']}  {summary['path']}")
    print(f"  labels: {', '.join(summary['labels']) or 'none'}")
    print(f"  created: {summary['created_at'] or '-'}  starting weights: {summary['weights']}")
    print(f"  classes: {', '.join(summary['classes'] or [])}")
    test = summary["test"]
    if "accuracy" in test:
        print(
            f"  test accuracy {test['accuracy']:.1%}"
            + (f"  macro F1 {test['macro_f1']:.3f}" if "macro_f1" in test else "")
        )
    calibrated = summary["calibration"]
    if calibrated and calibrated.get("ece_before") is not None:
        print(
            f"  calibration: {calibrated['method']}, T {calibrated['temperature']:.4g}, test ECE "
            f"{calibrated['ece_before']:.3f} -> {calibrated['ece_after']:.3f}; "
            f"min_score {summary['min_score'] or 0:g}"
        )
    for key in ("diagnosis", "promotion"):
        if summary[key]:
            print(f"  {key}: {summary[key]}")
    for warning in summary["warnings"]:
        print(f"  warning: {warning}")
    print(f"  report: {summary['report'] or 'none'}")
    return 0


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf import registry

    name, version = args.ref
    deleted = registry.delete(_model_dir(args, settings), name, version, force=args.force)
    if args.json:
        emit_json({"name": name, "deleted": deleted, "model_removed": version is None})
    else:
        what = f"model {name}" if version is None else f"{name} version {version}"
        print(f"deleted {what} (versions {', '.join(map(str, deleted)) or 'none'})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list models, versions, metrics and labels")
    models.add_argument("name", nargs="?")
    models.add_argument("--model-dir")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    promote = sub.add_parser("promote", help="point a label (default stable) at a version")
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    promote.add_argument("--label", default="stable")
    promote.add_argument("--model-dir")
    promote.add_argument("--json", action="store_true")
    promote.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip loading the version and replaying its golden files first",
    )
    promote.set_defaults(func=cmd_promote)

    rollback = sub.add_parser("rollback", help="move a label back to its previous version")
    rollback.add_argument("name")
    rollback.add_argument("--label", default="stable")
    rollback.add_argument("--model-dir")
    rollback.add_argument("--json", action="store_true")
    rollback.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip loading the version and replaying its golden files first",
    )
    rollback.set_defaults(func=cmd_rollback)

    show = sub.add_parser("show", help="a version's card summary and report path")
    show.add_argument("ref", type=parse_ref, metavar="NAME[:VERSION]", help="default: stable")
    show.add_argument("--model-dir")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    delete = sub.add_parser("delete", help="delete a version or a whole model (admin)")
    delete.add_argument("ref", type=parse_ref, metavar="NAME[:VERSION]")
    delete.add_argument("--force", action="store_true", help="also delete labelled versions")
    delete.add_argument("--model-dir")
    delete.add_argument("--json", action="store_true")
    delete.set_defaults(func=cmd_delete)
