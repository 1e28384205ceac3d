"""Every flag of every `dora-proxy` command says its default in --help, and every settings flag
names its environment variable (generated from the settings table, so none can be forgotten)."""

from __future__ import annotations

import argparse

import pytest

from proxy.cli import build_parser
from proxy.settings import SETTINGS


def _commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{prefix}{name}"] = sub
                found |= _commands(sub, f"{prefix}{name} ")
    return found


COMMANDS = _commands(build_parser())


def test_every_command_is_covered() -> None:
    assert {"serve", "demo", "cache warm", "cache stats", "cache clear", "check"} <= set(COMMANDS)
    assert {"webhooks list", "webhooks install"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_shows_its_default_and_settings_their_variable(name: str) -> None:
    parser = COMMANDS[name]
    flags = {s.flag: s for s in SETTINGS}
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            continue
        help_text = " ".join(((action.help or "") % {"default": action.default}).split())
        assert "default" in help_text, (name, action.option_strings)
        assert help_text in text, (name, action.option_strings)  # really rendered
        setting = flags.get(action.option_strings[0])
        if setting is not None:
            assert f"env: {setting.env_var}" in help_text, (name, setting.name)
    if "--port" in text:
        assert "TCP port to listen on. (default: 8080; env: DORA_PROXY_PORT)" in text
