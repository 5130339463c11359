"""deploy/: the manifests parse and say what the replicas need (no cluster here: the
daemon's side of them, /healthz, /readyz, SIGHUP and replicas, is tested in test_e2e.py and
test_replicas.py)."""
from __future__ import annotations

import yaml
from conftest import ROOT

from monitor.config import load_config

K8S = ROOT / "deploy" / "k8s"


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_kubernetes_deployment_runs_three_probed_replicas_with_secrets_out_of_the_configmap():
    kinds = {d["kind"]: d for d in docs(K8S / "deployment.yaml")}
    deployment = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in container["env"]}
    assert env["MONITOR_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "news-monitor"
    (config,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    mounted = {item["path"] for item in config["configMap"]["items"]}
    shipped = {"monitor.yaml"} | {f"watchlists/{p.name}" for p in (ROOT / "config" / "watchlists").glob("*.yaml")}
    assert mounted == shipped  # every file monitor.yaml includes is mounted where it looks for it
    secret = docs(K8S / "secret.example.yaml")[0]
    assert secret["kind"] == "Secret" and set(secret["stringData"]) >= {"database-url", "slack-url"}
    assert {"Service", "PodDisruptionBudget"} <= kinds.keys()


def test_compose_file_runs_three_replicas_on_postgres():
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.replicas.yml").read_text())
    monitor = compose["services"]["monitor"]
    assert monitor["deploy"]["replicas"] == 3
    assert monitor["environment"]["MONITOR_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "ports" not in monitor  # three replicas cannot publish one host port
    assert compose["services"]["postgres"]["image"].startswith("postgres:")


def test_shipped_config_spells_out_the_replica_defaults():
    cfg = load_config(ROOT / "config" / "monitor.yaml", env={}, check_channels=False)
    assert cfg.replicas.lease.total_seconds() == 60 and cfg.replicas.heartbeat.total_seconds() == 10
