"""Docs that must match the code: the config table and the environment table."""

from pathlib import Path

from imgclf.config import config_table
from imgclf.settings import Settings, settings_table

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_doc_holds_the_current_table():
    assert config_table() in (ROOT / "docs/configuration.md").read_text()


def test_readme_lists_every_environment_variable():
    readme = (ROOT / "README.md").read_text()
    assert settings_table() in readme
    documented = {
        line.split("`")[1] for line in readme.splitlines() if line.startswith("| `IMGCLF_")
    }
    expected = {f"IMGCLF_{name.upper()}" for name in Settings.model_fields}
    assert documented == expected


def test_readme_has_exactly_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Two commands on a fresh machine")[1].split("```bash")[1]
    commands = [line for line in block.split("```")[0].splitlines() if line.strip()]
    assert [c.split()[0] for c in commands] == ["scripts/demo", "scripts/test"]
    assert "scripts/test" in (ROOT / ".ci/run").read_text()
