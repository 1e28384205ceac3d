"""The public names of the package and of each subpackage, as httpx pins its own.

A package's `__all__` must list exactly what its `__init__.py` exports, i.e. every public name it
defines or re-imports from the proxy package (names imported from elsewhere, like `os` or
`Path`, are its tools, not its API), in ruff's isort-style order (RUF022). A name added without
`__all__`, or an `__all__` entry left behind after a rename, fails here.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import proxy

SUBPACKAGES = sorted(f"proxy.{i.name}" for i in pkgutil.iter_modules(proxy.__path__) if i.ispkg)
PACKAGES = ["proxy", *SUBPACKAGES]
INCLUDED_PRIVATE = {"__version__"}


def _exported(source: str) -> set[str]:
    """Public names bound at the top level of `source`, except imports from outside proxy."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom):
            if node.module and (node.module == "proxy" or node.module.startswith("proxy.")):
                names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_") or n in INCLUDED_PRIVATE}


def _isort_style(name: str) -> tuple[int, list[object]]:
    """RUF022's order: SCREAMING_CASE, then CamelCase, then the rest; natural sort inside."""
    if name.isupper() or (name.upper() == name and any(c.isalpha() for c in name)):
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    natural = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
    return group, natural


def test_every_subpackage_is_checked() -> None:
    assert {"proxy.cache", "proxy.demo", "proxy.telemetry", "proxy.upstream", "proxy.web"} <= set(
        PACKAGES
    )


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_what_the_package_exports(name: str) -> None:
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    source = Path(module.__file__).read_text()
    assert sorted(module.__all__, key=_isort_style) == module.__all__, f"{name}: unsorted"
    assert set(module.__all__) == _exported(source)
    assert len(set(module.__all__)) == len(module.__all__)
    for member in module.__all__:
        assert hasattr(module, member), f"{name}.__all__ names {member}, which does not exist"


def test_top_level_names() -> None:
    assert proxy.__all__ == ["USER_AGENT", "__version__"]
    assert proxy.USER_AGENT.startswith("gitlab-dora-proxy/")
    assert proxy.USER_AGENT.removeprefix("gitlab-dora-proxy/") == proxy.__version__


def test_the_check_itself_catches_drift() -> None:
    """The source reader sees re-exports, definitions and constants, and skips foreign imports."""
    source = (
        "import os\nfrom pathlib import Path\nfrom proxy.x import A, b as c\n"
        "D = 1\ndef e(): ...\nclass F: ...\n_g = 2\n__version__ = '1'\n"
    )
    assert _exported(source) == {"A", "c", "D", "e", "F", "__version__"}
