"""The one way commands print `--json`: one JSON document on stdout.

Each command's document is described in docs/cli.md; keys are only ever added.
"""

from __future__ import annotations

import json


def emit_json(value: object) -> None:
    print(json.dumps(value, indent=1, default=str))
