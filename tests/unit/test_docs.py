"""The README stays honest: its configuration table is the settings table, its commands exist."""

from __future__ import annotations

import os
from pathlib import Path

from proxy.settings import SETTINGS, settings_table_markdown

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_configuration_table_is_generated_from_settings() -> None:
    assert settings_table_markdown() in README, (
        "README's configuration table is out of date: "
        "paste proxy.settings.settings_table_markdown()"
    )


def test_every_setting_is_in_the_example_config() -> None:
    example = (ROOT / "config" / "dora-proxy.toml").read_text()
    for setting in SETTINGS:
        assert setting.name in example


def test_readme_starts_with_the_two_commands_and_they_exist() -> None:
    top = README[: README.index("## ")]
    for script in ("scripts/demo", "scripts/test"):
        assert script in top
        assert os.access(ROOT / script, os.X_OK)
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
