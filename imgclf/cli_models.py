"""`imgclf models | promote | rollback`: the model registry for people."""

from __future__ import annotations

import argparse
import json

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

    model_dir = _model_dir(args, settings)
    names = [args.name] if args.name else repository.list_models(model_dir)
    summaries = [model_summary(model_dir, n, settings) for n in names]
    if args.json:
        print(json.dumps(summaries, indent=1))
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


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf import registry

    aliases = registry.set_alias(
        _model_dir(args, settings), args.name, args.label, args.version, by="imgclf promote"
    )
    print(f"{args.name}: {args.label} -> version {args.version}  (labels {aliases})")
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf import registry

    version = registry.rollback(_model_dir(args, settings), args.name, args.label)
    print(f"{args.name}: {args.label} rolled back to version {version}")
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
    promote.set_defaults(func=cmd_promote)

    rollback = sub.add_parser("rollback", help="move a label back to its previous version")
    rollback.add_argument("name")
    rollback.add_argument("--label", default="stable")
    rollback.add_argument("--model-dir")
    rollback.set_defaults(func=cmd_rollback)
