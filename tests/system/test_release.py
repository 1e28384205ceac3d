"""The release: `python -m build` makes an sdist and a wheel that `twine check` accepts; the wheel
holds the package and its data files but not the tests; the version lives in one place; the lock
file pins every runtime dependency by hash and the Dockerfile installs from it.

The build runs in a subprocess into a temporary directory (build isolation fetches setuptools
from the package index, as any release build does).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import proxy

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_twine_check_is_clean(dist: Path) -> None:
    files = sorted(str(p) for p in dist.iterdir())
    assert len(files) == 2, files
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_wheel_holds_the_package_and_its_data_files_but_not_the_tests(dist: Path) -> None:
    wheel = next(dist.glob("*.whl"))
    assert wheel.name.startswith(f"gitlab_dora_proxy-{proxy.__version__}-py3-none-any")
    names = set(zipfile.ZipFile(wheel).namelist())
    package_files = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "proxy").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert package_files <= names, sorted(package_files - names)
    assert "proxy/py.typed" in names  # a data file, there only through package-data
    assert not [n for n in names if n.startswith(("tests/", "bench/", "scripts/", "deploy/"))]
    metadata = zipfile.ZipFile(wheel).read(
        f"gitlab_dora_proxy-{proxy.__version__}.dist-info/METADATA"
    )
    assert f"Version: {proxy.__version__}".encode() in metadata
    entry_points = zipfile.ZipFile(wheel).read(
        f"gitlab_dora_proxy-{proxy.__version__}.dist-info/entry_points.txt"
    )
    assert b"dora-proxy = proxy.cli:main" in entry_points


def test_the_version_has_one_place() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "proxy.__version__"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG VERSION={proxy.__version__}\n" in dockerfile


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["redis"]}
    text = LOCK.read_text()
    pinned: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+) \\", block)
        if match:
            pinned[match.group(1).lower().replace("_", "-")] = block
    assert wanted <= set(pinned), sorted(wanted - set(pinned))
    for name, block in pinned.items():
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), name
    # Every requirement line is an exact pin: no ranges, no URLs, no editable installs.
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9._-]+==[^\s]+ \\", line), line


def test_the_lock_resolves_completely_with_hash_checking(tmp_path: Path) -> None:
    """What the Dockerfile's `pip wheel --require-hashes -r requirements.lock` needs: every file
    found with a matching sha256, and no dependency left unpinned (hash-checking mode refuses
    one). Downloads from the package index; resolves for this interpreter."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the lock targets the image's Python 3.11 (python:3.11 in the Dockerfile)")
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--require-hashes",
            "--quiet",
            "--report",
            str(report),
            "-r",
            str(LOCK),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    installed = {
        item["metadata"]["name"].lower().replace("_", "-")
        for item in json.loads(report.read_text())["install"]
    }
    pinned = {
        line.split("==", 1)[0].lower().replace("_", "-")
        for line in LOCK.read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    }
    assert installed == pinned
