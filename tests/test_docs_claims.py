"""The claims README.md, docs/ and examples/ make that a machine can check.

Commands and flags they show exist in the CLI; every IMGCLF_* name they use is a
setting; the examples parse and answer --help; docs/cli.md documents every --json.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imgclf.cli import build_parser
from imgclf.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Names that are not process settings: test-only and third-party variables.
NOT_SETTINGS = {"IMGCLF_TEST_REDIS_URL"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def _invocations() -> list[tuple[str, str, str]]:
    """(file, command, rest of the line) for `imgclf COMMAND ...` in code spans and blocks."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        spans = re.findall(r"```.*?```", text, flags=re.S) + re.findall(r"`[^`\n]+`", text)
        for span in spans:
            for line in span.splitlines():
                for match in re.finditer(r"(?:^|[\s`(])imgclf ([a-z]+)([^`#|]*)", line):
                    found.append((path.name, match.group(1), match.group(2)))
    return found


def test_commands_and_flags_in_the_docs_exist():
    commands = _commands()
    invocations = _invocations()
    assert len(invocations) > 20  # the scan finds what the docs show
    wrong = []
    for where, command, rest in invocations:
        if command not in commands:
            wrong.append(f"{where}: imgclf {command}")
            continue
        known = _flags(commands[command]) | {"--help", "--debug", "--version"}
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
            if flag not in known:
                wrong.append(f"{where}: imgclf {command} {flag}")
    assert not wrong, wrong


def test_environment_names_in_docs_and_examples_are_settings():
    names = {f"IMGCLF_{field.upper()}" for field in Settings.model_fields}
    texts = [p.read_text(encoding="utf-8") for p in DOCS]
    texts += [p.read_text(encoding="utf-8") for p in (ROOT / "examples").glob("*.py")]
    used = set()
    for text in texts:
        used |= set(re.findall(r"IMGCLF_[A-Z0-9_]*[A-Z0-9]", text))
    assert used - names - NOT_SETTINGS == set()


def test_every_json_command_is_documented_in_docs_cli():
    table = (ROOT / "docs/cli.md").read_text(encoding="utf-8")
    for name, parser in _commands().items():
        if "--json" in _flags(parser):
            assert re.search(rf"\| `[^|]*\b{name}\b[^|]*` \|", table), name


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_examples_parse_and_answer_help(example):
    compile(example.read_text(encoding="utf-8"), str(example), "exec")
    done = subprocess.run(
        [sys.executable, str(example), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
