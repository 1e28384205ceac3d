"""`pip install .` (the README's line) must give a proxy that runs every documented setting:
Redis (`cache_url = redis://...`) and GraphQL (graphql-core) are main dependencies, not extras."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_redis_and_graphql_core_are_installed_by_a_plain_pip_install() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~ \[]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    assert {"redis", "graphql-core", "aiohttp"} <= names
    assert "pip install ." in (ROOT / "README.md").read_text()
