"""`imgclf audit`: near-duplicates, split leakage, label suspects and data checks of a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from imgclf.errors import InvalidInput
from imgclf.settings import Settings


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf.config import load_config_file, parse_config

    config = parse_config(load_config_file(args.config) if args.config else {})
    if args.name and args.kfold_dir:
        raise InvalidInput("give --name (a model version) or --kfold-dir, not both")
    version_dir = None
    if args.name:
        from imgclf import registry, repository
        from imgclf.tf_quiet import import_tensorflow_quietly

        model_dir = Path(args.model_dir) if args.model_dir else settings.model_dir
        # The version a server would answer with, unless one is named.
        version = registry.repository_version(
            model_dir,
            args.name,
            policy=settings.version_policy,
            specific=settings.serve_versions,
            version=args.version,
        )
        version_dir = repository.version_path(model_dir, args.name, version)
        import_tensorflow_quietly()
    from imgclf.audit import audit_folder
    from imgclf.audit.report import console_lines, write_html, write_json

    report = audit_folder(
        args.data,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        version_dir=version_dir,
        kfold_dir=Path(args.kfold_dir) if args.kfold_dir else None,
    )
    print("\n".join(console_lines(report, limit=args.show)))
    if args.json:
        print(f"json: {write_json(report, Path(args.json))}")
    if args.html:
        print(f"html: {write_html(report, Path(args.html))}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser(
        "audit", help="find duplicates, split leakage, label suspects and odd images in data"
    )
    audit.add_argument("--data", required=True, help="class folders, train/val/test, or a CSV")
    audit.add_argument("--config", help="training config whose split settings to audit with")
    audit.add_argument("--name", help="model whose predictions rank label suspects")
    audit.add_argument("--version", type=int, help="default: the newest version")
    audit.add_argument("--model-dir", help="model repository (default $IMGCLF_MODEL_DIR)")
    audit.add_argument(
        "--kfold-dir", help="run folder of a k-fold job: rank label suspects out-of-fold"
    )
    audit.add_argument("--json", help="write the full report here")
    audit.add_argument("--html", help="write an HTML page with thumbnails here")
    audit.add_argument("--show", type=int, default=10, help="groups and suspects printed")
    audit.set_defaults(func=cmd_audit)
