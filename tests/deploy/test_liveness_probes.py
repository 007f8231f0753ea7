"""The ingest, the re-planner, traffic control and the measures service are probed on their
heartbeat endpoint (`cityops.ingest.health`): in Kubernetes a liveness probe on `/healthz`
of the port their settings name, scraped by Prometheus; in compose a health check on it."""

from __future__ import annotations

from typing import Any

import pytest

from cityops.ingest.config import Settings
from tests.deploy.support import (
    command_args,
    interpolate_tree,
    load_compose,
    load_k8s,
    pod_labels,
    pod_spec,
    sample_env,
    service_env,
)

#: component / compose service -> the setting of its endpoint's port
SERVICES = {
    "ingest": "CITYOPS_INGEST_METRICS_PORT",
    "replanner": "CITYOPS_REPLANNER_METRICS_PORT",
    "traffic-control": "CITYOPS_TRAFFIC_CONTROL_METRICS_PORT",
    "traffic-measures": "CITYOPS_TRAFFIC_MEASURES_METRICS_PORT",
}


def _default(variable: str) -> int:
    field = variable.removeprefix("CITYOPS_").lower()
    return int(Settings.model_fields[field].default)


def test_the_ports_are_distinct_and_on_by_default() -> None:
    ports = [_default(v) for v in SERVICES.values()]
    assert all(ports) and len(set(ports)) == len(ports)


@pytest.mark.parametrize("component", sorted(SERVICES))
def test_k8s_liveness_probes_the_heartbeat_on_the_configured_port(component: str) -> None:
    (doc,) = [
        d
        for _p, d in load_k8s()
        if pod_spec(d) is not None and pod_labels(d).get("app.kubernetes.io/component") == component
    ]
    (container,) = pod_spec(doc)["containers"]  # type: ignore[index]
    env = {e["name"]: e.get("value") for e in container["env"]}
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    assert env[SERVICES[component]] == str(port) == str(_default(SERVICES[component]))
    for kind in ("livenessProbe", "startupProbe"):
        probe = container.get(kind)
        if probe is not None:
            assert probe["httpGet"] == {"path": "/healthz", "port": "metrics"}, kind
    assert container["livenessProbe"]["failureThreshold"] >= 2, "one slow answer is no restart"
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_health_checks_ask_the_heartbeat(name: str) -> None:
    compose = load_compose()
    rendered: dict[str, Any] = interpolate_tree(compose, sample_env(compose))
    svc = rendered["services"][name]
    port = service_env(svc)[SERVICES[name]]
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(svc["healthcheck"]["test"])
    assert svc["expose"] == [port]
    assert command_args(svc["command"])[0] in ("ingest", "routing", "traffic")
