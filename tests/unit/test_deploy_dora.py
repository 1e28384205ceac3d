"""The Prometheus and Grafana files of deploy/ fit the exported gauges and each other."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from proxy.telemetry.dora_export import GAUGES, REFRESHED

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
yaml = pytest.importorskip("yaml", reason="PyYAML not installed (in the test extras)")


def test_grafana_dashboard_queries_only_exported_gauges_and_shows_all_four() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "dora.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    names = set(re.findall(r"gitlab_dora_[a-z_]+", " ".join(exprs)))
    exported = {name for name, _ in GAUGES.values()} | {REFRESHED[0]}
    assert names <= exported
    assert {name for name, _ in GAUGES.values()} <= names
    uid = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert uid == {datasource["datasources"][0]["uid"]}


def test_compose_wires_prometheus_and_grafana_to_the_files() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            host = volume.split(":")[0]
            if host.startswith("./"):
                assert (DEPLOY / host).exists(), volume
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["proxy-1:8080", "proxy-2:8080"]
    exporter = services["proxy-1"]["environment"]
    assert exporter["DORA_PROXY_EXPORT"].startswith("${DORA_PROXY_EXPORT")
    assert exporter["DORA_PROXY_UPSTREAM_URL"].startswith("${DORA_PROXY_UPSTREAM_URL")
    assert "DORA_PROXY_EXPORT" not in services["proxy-2"]["environment"]
