"""The production deployment files hold together: docker-compose (real Kafka in KRaft mode, Redis,
Prometheus with the alert rules, Grafana with provisioned dashboards, two or more workers, the review
page, the dataset builder and the trainer, with health checks), the Kubernetes manifests (scrape
annotations, settings that exist, the policy in step), and `docker compose config` where a client is."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import fields

import pytest
import yaml

from flywheel.settings import Settings
from tests.metric_defs import ROOT

K8S = ROOT / "deploy" / "k8s"
ENV_KEYS = {f"FLYWHEEL_{f.name.upper()}" for f in fields(Settings)}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def k8s_docs() -> list[dict]:
    docs = []
    for path in sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_compose_runs_every_part_with_health_checks():
    services = compose()["services"]
    assert {"kafka", "redis", "prometheus", "grafana", "worker", "review", "datasets", "trainer"} <= set(services)
    assert (
        services["kafka"]["image"].startswith("apache/kafka")
        and "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    )
    assert services["worker"]["deploy"]["replicas"] >= 2
    for name in ("kafka", "redis", "worker", "review", "datasets", "trainer", "grafana"):
        assert "healthcheck" in services[name], name
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert any(v.startswith("./deploy/grafana/dashboards:") for v in services["grafana"]["volumes"])
    for name, svc in services.items():
        env = svc.get("environment") or {}
        keys = {
            k for k in (env if isinstance(env, dict) else [e.split("=")[0] for e in env]) if k.startswith("FLYWHEEL_")
        }
        assert keys <= ENV_KEYS, (name, keys - ENV_KEYS)


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_accepts_the_file():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("docker client without the compose plugin")
    done = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_grafana_provisioning_points_at_the_dashboards():
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == "prometheus"
    boards = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/flywheel.yml").read_text())
    assert boards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_kubernetes_manifests():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).exists(), resource
    docs = k8s_docs()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("StatefulSet", "flywheel-worker"),
        ("Deployment", "flywheel-review"),
        ("Deployment", "flywheel-datasets"),
        ("Deployment", "flywheel-trainer"),
        ("Job", "flywheel-topics-create"),
    } <= kinds, kinds
    for d in docs:
        if d["kind"] in ("StatefulSet", "Deployment"):
            notes = d["spec"]["template"]["metadata"]["annotations"]
            assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/port"].isdigit(), d["metadata"][
                "name"
            ]
        if d["kind"] == "ConfigMap":
            keys = {k for k in d["data"] if k.startswith("FLYWHEEL_")}
            assert keys <= ENV_KEYS, keys - ENV_KEYS
    by_name = {d["metadata"]["name"]: d for d in docs}
    assert by_name["flywheel-datasets"]["spec"]["replicas"] == 1  # one builder reads every partition
    # kustomize reads no file outside its directory: the policy there is a copy, kept in step
    assert (K8S / "gate-policy.toml").read_text() == (ROOT / "deploy" / "gate-policy.toml").read_text()
