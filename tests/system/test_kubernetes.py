"""deploy/kubernetes: every manifest is valid against the Kubernetes OpenAPI schemas (offline,
`kubernetes-validate`, strict: an unknown or misspelt field fails), and the pieces fit together
(selectors, ports, probes, ConfigMap keys that are real settings, the Secret's keys).

No cluster and no kubectl are needed; the schemas ship inside the `kubernetes-validate` package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.settings import SETTINGS

yaml = pytest.importorskip("yaml", reason="PyYAML not installed (in the test extras)")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate not installed (in the test extras)"
)

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
COMPONENT = BASE / "servicemonitor"
# The oldest Kubernetes minor still in wide use, and the newest the package knows.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
PROXY = {"app.kubernetes.io/name": "gitlab-dora-proxy", "app.kubernetes.io/component": "proxy"}
REDIS = {"app.kubernetes.io/name": "gitlab-dora-proxy", "app.kubernetes.io/component": "redis"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def _base_objects() -> list[dict[str, Any]]:
    return [doc for name in _kustomization(BASE)["resources"] for doc in _documents(BASE / name)]


def _one(kind: str, labels: dict[str, str]) -> dict[str, Any]:
    found = [
        doc
        for doc in _base_objects()
        if doc["kind"] == kind and doc["metadata"].get("labels", {}).items() >= labels.items()
    ]
    assert len(found) == 1, (kind, labels, len(found))
    return found[0]


def _manifests() -> list[Path]:
    return sorted(p for p in BASE.rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", _manifests(), ids=lambda p: p.relative_to(BASE).as_posix())
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path: Path, version: str) -> None:
    for doc in _documents(path):
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked by test_servicemonitor_scrapes_the_proxy_service
        kubernetes_validate.validate(doc, version, strict=True)


def test_kustomizations_list_every_manifest_and_nothing_missing() -> None:
    base = _kustomization(BASE)
    assert base["kind"] == "Kustomization"
    listed = {BASE / name for name in base["resources"]}
    component = _kustomization(COMPONENT)
    assert component["kind"] == "Component"
    listed |= {COMPONENT / name for name in component["resources"]}
    assert listed == set(_manifests())
    # The ServiceMonitor needs the Prometheus Operator's CRDs: never in the default resources.
    assert not any(doc["kind"] == "ServiceMonitor" for doc in _base_objects())


def test_proxy_deployment_is_two_non_root_replicas_on_a_read_only_root() -> None:
    deployment = _one("Deployment", PROXY)
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"] == PROXY
    assert spec["template"]["metadata"]["labels"].items() >= PROXY.items()
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (Dockerfile)
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}, kind
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "/tmp" in mounts and "/var/cache/dora-proxy" in mounts
    for name in mounts.values():
        assert "emptyDir" in volumes[name], name
    env = {e["name"]: e for e in container["env"]}
    cache_dir = env["DORA_PROXY_CACHE_DIR"]["value"]
    assert cache_dir.startswith("/var/cache/dora-proxy/")  # inside the writable volume


def test_probes_hit_the_liveness_and_readiness_endpoints_on_the_served_port() -> None:
    (container,) = _one("Deployment", PROXY)["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert ports["http"] == int(env["DORA_PROXY_PORT"])
    assert env["DORA_PROXY_HOST"] == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/liveness", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/readiness", "port": "http"}
    # Served by the app (README's endpoint table), so a typo here would fail the probe forever.
    readme = (ROOT / "README.md").read_text()
    assert "`GET /-/liveness`" in readme and "`GET /-/readiness`" in readme


def test_settings_come_from_the_configmap_and_secrets_from_the_secret() -> None:
    known = {setting.env_var for setting in SETTINGS}
    secrets = {setting.env_var for setting in SETTINGS if setting.secret}
    config = _one("ConfigMap", {"app.kubernetes.io/name": "gitlab-dora-proxy"})
    assert set(config["data"]) <= known - secrets, set(config["data"]) - (known - secrets)
    (container,) = _one("Deployment", PROXY)["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    env = {e["name"]: e for e in container["env"]}
    assert set(env) <= known
    webhook = env["DORA_PROXY_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]
    assert webhook == {"name": "gitlab-dora-proxy", "key": "webhook-secret", "optional": True}
    server = env["DORA_PROXY_SERVER_SECRET"]["valueFrom"]["secretKeyRef"]
    assert server == {"name": "gitlab-dora-proxy", "key": "server-secret"}
    for name in secrets:
        assert "value" not in env[name], name  # never a literal secret in a manifest


def test_service_pdb_and_redis_select_the_right_pods() -> None:
    service = _one("Service", PROXY)
    assert service["spec"]["selector"] == PROXY
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = _one("PodDisruptionBudget", PROXY)
    assert pdb["spec"]["selector"]["matchLabels"] == PROXY
    assert pdb["spec"]["minAvailable"] == 1  # < replicas: a drain can proceed, one at a time
    redis_service = _one("Service", REDIS)
    redis = _one("Deployment", REDIS)
    assert redis_service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    config = _one("ConfigMap", {"app.kubernetes.io/name": "gitlab-dora-proxy"})
    name = redis_service["metadata"]["name"]
    port = redis_service["spec"]["ports"][0]["port"]
    assert config["data"]["DORA_PROXY_CACHE_URL"] == f"redis://{name}:{port}/0"
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_servicemonitor_scrapes_the_proxy_service() -> None:
    (monitor,) = _documents(COMPONENT / "servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    service = _one("Service", PROXY)
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"


def test_the_base_deploys_the_image_of_this_version() -> None:
    import proxy

    (image,) = _kustomization(BASE)["images"]
    assert image == {"name": "gitlab-dora-proxy", "newTag": proxy.__version__}
    (container,) = _one("Deployment", PROXY)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image["name"]
