"""The deployment files agree with the code: static checks of deploy/.

What cannot run here (no container engine, no Kubernetes, no TimescaleDB) is checked as
far as files allow: the compose file is interpolated as `docker compose` does and parsed
by a Compose-spec parser (compose-spec, bindings of the Rust `compose_spec` crate); the
manifests are validated against the Kubernetes JSON schemas (kubernetes-validate, strict:
unknown fields are errors); and both are compared with the code: every `CITYOPS_*`
variable is a real setting whose value the settings accept, every command parses with the
real `cityops` parser, every mounted file exists, images are pinned, probes and health
checks point at ports that exist.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import compose_spec
import pytest
import yaml
from kubernetes_validate import utils as kv
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from cityops.api.cli import build_parser
from cityops.ingest.city import City, bundled_profile, read_profile
from cityops.roadworks.config import RoadworksSettings, city_fields
from tests.deploy.support import (
    COMPOSE_DIR,
    DOCKERFILE,
    K8S_DIR,
    REPO,
    SECRET_NAME,
    MissingVariableError,
    command_args,
    compose_variables,
    env_example,
    grafana_provisioning_variables,
    interpolate,
    interpolate_tree,
    load_compose,
    load_k8s,
    package_dirs,
    pod_labels,
    pod_spec,
    references,
    sample_env,
    service_env,
    setting_names,
    settings_classes,
)

#: Oldest Kubernetes release the manifests must be valid for (CronJob timeZone is GA in 1.27).
K8S_VERSION = "1.29"
CITYOPS_SERVICES = (
    "migrate",
    "ingest",
    "api",
    "replanner",
    "traffic-control",
    "traffic-measures",
)
INFRA_SERVICES = ("timescaledb", "mosquitto", "grafana")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def rendered(compose: dict[str, Any]) -> dict[str, Any]:
    """The compose file as `docker compose` sees it with a filled-in .env."""
    rendered: dict[str, Any] = interpolate_tree(compose, sample_env(compose))
    return rendered


@pytest.fixture(scope="module")
def settings_env_names() -> dict[str, type[BaseSettings]]:
    out = {}
    for cls in settings_classes():
        for name in setting_names(cls):
            out[name] = cls
    return out


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


@pytest.fixture(scope="module")
def k8s() -> list[tuple[Path, dict[str, Any]]]:
    return load_k8s()


def _is_cityops_image(image: str) -> bool:
    return "cityops" in image.rsplit("/", 1)[-1].split(":")[0]


def _cityops_services(rendered: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, svc in rendered["services"].items():
        if _is_cityops_image(svc["image"]):
            yield name, svc


def _parse_command(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"`cityops {' '.join(argv)}` is not a valid cityops command")


def _demo_city() -> City:
    path = bundled_profile("demo")
    assert path is not None
    return read_profile(path)


def _settings_from(
    env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch, classes: set[type[BaseSettings]]
) -> None:
    """Build every settings class from exactly `env` (nothing else of this machine)."""
    with monkeypatch.context() as m:
        for key in list(os.environ):
            if key.upper().startswith("CITYOPS_"):
                m.delenv(key)
        for key, value in env.items():
            m.setenv(key, value)
        for cls in classes:
            # where the city is comes from its profile (mounted, checked apart), not the env
            kwargs = city_fields(_demo_city()) if cls is RoadworksSettings else {}
            try:
                cls(**kwargs)
            except ValidationError as exc:
                pytest.fail(f"{cls.__name__} refuses {dict(env)}: {exc}")


# --- compose ---------------------------------------------------------------------------


def test_compose_has_the_platform(compose: dict[str, Any]) -> None:
    services = set(compose["services"])
    assert set(CITYOPS_SERVICES) | set(INFRA_SERVICES) <= services


def test_compose_is_valid_compose_spec(rendered: dict[str, Any]) -> None:
    parsed = compose_spec.PyCompose.from_yaml(yaml.safe_dump(rendered))
    parsed.validate()
    assert set(parsed.service_names()) == set(rendered["services"])


def test_compose_spec_parser_refuses_mistakes(rendered: dict[str, Any]) -> None:
    """The validator above is not a rubber stamp: typical mistakes are refused."""
    mistakes = [
        ("healthchek", {"test": ["CMD", "true"]}),
        ("restart", "sometimes"),
        ("depends_on", {"migrate": {"condition": "service_done"}}),
    ]
    for key, value in mistakes:
        broken = copy.deepcopy(rendered)
        broken["services"]["api"][key] = value
        with pytest.raises(ValueError, match=key.replace("_", "_")):
            compose_spec.PyCompose.from_yaml(yaml.safe_dump(broken))


def test_required_variables_stop_compose_when_unset(compose: dict[str, Any]) -> None:
    """No password has a default: each secret is a `${VAR:?message}` and compose refuses
    to start without it."""
    variables = compose_variables(compose)
    secrets = {name for name in variables if SECRET_NAME.search(name)}
    assert {"POSTGRES_PASSWORD", "DB_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= secrets
    for name in secrets:
        for ref in variables[name]:
            assert ref.required and ref.default is None, f"{name} must be ${{{name}:?...}}"
    env = sample_env(compose)
    for name in secrets:
        partial = {k: v for k, v in env.items() if k != name}
        with pytest.raises(MissingVariableError, match=name):
            interpolate_tree(compose, partial)
        with pytest.raises(MissingVariableError, match=name):
            interpolate_tree(compose, {**partial, name: ""})


def _secret_values(compose: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    for sname, svc in compose["services"].items():
        for key, value in service_env(svc).items():
            yield sname, key, value


def _only_required_reference(value: str) -> bool:
    """The value is exactly one `${VAR:?message}` and nothing else."""
    refs = references(value)
    return len(refs) == 1 and refs[0].required and interpolate(value, {refs[0].name: "x"}) == "x"


def test_no_plaintext_secret_in_compose(compose: dict[str, Any]) -> None:
    checked = 0
    for sname, key, value in _secret_values(compose):
        if SECRET_NAME.search(key):
            assert _only_required_reference(value), f"{sname}.{key} is not only ${{VAR:?}}"
            checked += 1
        for m in re.finditer(r"://([^:/@\s]+):([^@\s]+)@", value):
            assert _only_required_reference(m.group(2)), f"{sname}.{key}: password in URL"
            checked += 1
    assert checked >= 8


def test_env_example_lists_every_variable_without_values(compose: dict[str, Any]) -> None:
    example = env_example()
    variables = compose_variables(compose)
    missing = sorted(set(variables) - set(example))
    assert not missing, f".env.example does not mention {missing}"
    for name, value in example.items():
        if SECRET_NAME.search(name):
            assert value == "", f".env.example gives {name} a value"
    ignored = (COMPOSE_DIR / ".gitignore").read_text().split()
    assert ".env" in ignored


def test_cityops_variables_are_real_settings(
    rendered: dict[str, Any], settings_env_names: dict[str, type[BaseSettings]]
) -> None:
    grafana_vars = grafana_provisioning_variables()
    for sname, svc in rendered["services"].items():
        for key in service_env(svc):
            if not key.startswith("CITYOPS_"):
                continue
            if sname == "grafana":
                assert key in grafana_vars, f"grafana: {key} is read by no provisioning file"
            else:
                assert key in settings_env_names, f"{sname}: {key} is not a cityops setting"


def test_compose_settings_are_accepted_by_the_code(
    rendered: dict[str, Any],
    settings_env_names: dict[str, type[BaseSettings]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _name, svc in _cityops_services(rendered):
        env = {k: v for k, v in service_env(svc).items() if k.startswith("CITYOPS_")}
        _settings_from(env, monkeypatch, {settings_env_names[k] for k in env})


def test_grafana_gets_every_provisioning_variable(rendered: dict[str, Any]) -> None:
    env = service_env(rendered["services"]["grafana"])
    missing = grafana_provisioning_variables() - set(env)
    assert not missing, f"grafana provisioning reads unset {sorted(missing)}"


def test_compose_commands_are_cityops_commands(
    rendered: dict[str, Any], parser: argparse.ArgumentParser
) -> None:
    seen = set()
    for name, svc in _cityops_services(rendered):
        args = _parse_command(parser, command_args(svc["command"]))
        assert callable(args.func)
        seen.add(name)
    assert set(CITYOPS_SERVICES) <= seen


def test_compose_mounts_exist(rendered: dict[str, Any]) -> None:
    ignored = (COMPOSE_DIR / ".gitignore").read_text().split()
    for sname, svc in rendered["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in rendered["volumes"], f"{sname}: undeclared volume {source}"
                continue
            if source.startswith("./") and f"{Path(source).parts[0]}/" in ignored:
                continue  # created on the host at install time (secrets/, backups/)
            if source.startswith("/srv/cityops/"):
                continue  # a host folder from .env (CITY_DIR), made at install time
            assert (COMPOSE_DIR / source).exists(), f"{sname}: {source} does not exist"


def test_compose_images_are_pinned(rendered: dict[str, Any]) -> None:
    for sname, svc in rendered["services"].items():
        image = svc["image"]
        name, _, tag = image.rpartition(":")
        assert name and tag and "/" not in tag, f"{sname}: {image} has no tag"
        assert tag != "latest" and not tag.startswith("latest"), f"{sname}: {image}"
        assert re.search(r"\d", tag), f"{sname}: {image} is not a versioned tag"
    assert rendered["services"]["grafana"]["image"].split(":")[1].split(".")[0] in {"11", "12"}
    assert rendered["services"]["mosquitto"]["image"].split(":")[1].startswith("2.")
    assert "timescaledb-ha" in rendered["services"]["timescaledb"]["image"]


def test_long_running_services_have_health_checks_and_restart(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    for sname, svc in services.items():
        if svc.get("restart", "no") == "no":
            continue
        assert svc["restart"] in ("always", "unless-stopped", "on-failure"), sname
        health = svc.get("healthcheck")
        assert health and health.get("test"), f"{sname} has no health check"
        assert health["test"][0] in ("CMD", "CMD-SHELL"), sname


def test_depends_on_conditions_are_meaningful(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    for sname, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{sname} depends on unknown {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{sname}: {dep} has no health check"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{sname}: {dep} not one-shot"
            else:
                pytest.fail(f"{sname}: depends on {dep} without waiting for it ({condition})")
        if sname in CITYOPS_SERVICES and sname != "migrate":
            assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_health_checks_use_the_configured_ports(rendered: dict[str, Any]) -> None:
    ingest = rendered["services"]["ingest"]
    port = service_env(ingest)["CITYOPS_INGEST_METRICS_PORT"]
    assert f"127.0.0.1:{port}/healthz" in " ".join(ingest["healthcheck"]["test"])
    api = rendered["services"]["api"]
    argv = command_args(api["command"])
    api_port = argv[argv.index("--port") + 1]
    assert f"127.0.0.1:{api_port}/health" in " ".join(api["healthcheck"]["test"])
    assert any(p.endswith(f":{api_port}") for p in api["ports"])


def test_single_ingest_in_compose_keeps_a_stable_client_id(rendered: dict[str, Any]) -> None:
    """Compose runs one ingest with a fixed client id: its broker session (and the queue
    kept while it restarts) must not change name between restarts."""
    ingest = rendered["services"]["ingest"]
    assert "deploy" not in ingest or ingest["deploy"].get("replicas", 1) == 1
    assert service_env(ingest)["CITYOPS_INGEST_CLIENT_ID"]


def test_each_service_has_its_own_mqtt_account(rendered: dict[str, Any]) -> None:
    users = {}
    for sname, svc in _cityops_services(rendered):
        env = service_env(svc)
        if "CITYOPS_MQTT_USERNAME" in env and svc.get("restart") != "no":
            users[sname] = env["CITYOPS_MQTT_USERNAME"]
    assert set(users) == {"ingest", "api", "replanner", "traffic-control"}
    assert len(set(users.values())) == len(users)


def test_mosquitto_files_named_in_its_configuration_are_mounted(
    rendered: dict[str, Any],
) -> None:
    """Every path the mounted Mosquitto configuration names (password and ACL files as
    `cityops mqtt credentials` writes them, certificates, persistence, conf.d) lies in a
    mount of the container, and authentication is on."""
    mosquitto = rendered["services"]["mosquitto"]
    mounts = {}
    for volume in mosquitto["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = source
    config_files = [
        COMPOSE_DIR / source
        for target, source in mounts.items()
        if target.endswith(".conf") and source.startswith(".")
    ]
    directives: dict[str, str] = {}
    for path in config_files:
        for line in path.read_text().splitlines():
            parts = line.split()
            if parts and not parts[0].startswith("#") and len(parts) >= 2:
                directives[parts[0]] = parts[1]
    assert directives["allow_anonymous"] == "false"
    assert directives["persistence"] == "true"
    assert int(directives["max_queued_messages"]) >= 1_000_000
    assert directives["password_file"].endswith("/cityops.passwd")
    assert directives["acl_file"].endswith("/cityops.acl")
    for key in (
        "password_file",
        "acl_file",
        "cafile",
        "certfile",
        "keyfile",
        "persistence_location",
        "include_dir",
    ):
        path = directives[key].rstrip("/")
        inside = any(path == t or path.startswith(t + "/") for t in mounts)
        parent_of_mount = any(t.startswith(path + "/") for t in mounts)
        assert inside or parent_of_mount, f"mosquitto: {key} {path} is not mounted"
    assert mounts["/mosquitto/config/conf.d/cityops-queueing.conf"].endswith(
        "conf.d/cityops-queueing.conf"
    )


# --- Dockerfile ------------------------------------------------------------------------


def test_dockerfile_builds_every_package_and_runs_unprivileged() -> None:
    text = DOCKERFILE.read_text()
    copied = set(re.findall(r"^COPY (\S+) ", text, re.MULTILINE))
    for folder in package_dirs().values():
        assert folder in copied, f"Dockerfile does not copy {folder}/"
    for source in copied - {"pyproject.toml", "README.md"}:
        assert (REPO / source).exists(), source
    bases = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", text, re.MULTILINE)
    assert bases and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", bases[0])
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0"))
    assert 'ENTRYPOINT ["cityops"]' in text
    ignored = (REPO / ".dockerignore").read_text().split()
    for needed in copied:
        assert needed not in ignored, f".dockerignore drops {needed}"


# --- Kubernetes ------------------------------------------------------------------------


def test_manifests_are_valid_kubernetes(k8s: list[tuple[Path, dict[str, Any]]]) -> None:
    assert k8s
    for path, doc in k8s:
        if doc["kind"] == "Kustomization":
            continue
        assert {"apiVersion", "kind", "metadata"} <= set(doc), path.name
        assert doc["metadata"].get("name"), path.name
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "cityops", path.name
        kv.validate(doc, K8S_VERSION, strict=True)


def test_schema_validation_refuses_mistakes(k8s: list[tuple[Path, dict[str, Any]]]) -> None:
    deployment = next(doc for _p, doc in k8s if doc["kind"] == "Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["replica"] = 2
    with pytest.raises(kv.ValidationError):
        kv.validate(typo, K8S_VERSION, strict=True)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": "x"}]
    with pytest.raises(kv.ValidationError):
        kv.validate(wrong_type, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest(k8s: list[tuple[Path, dict[str, Any]]]) -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == files


def _workloads(k8s: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [doc for _p, doc in k8s if pod_spec(doc) is not None]


def _by_component(k8s: list[tuple[Path, dict[str, Any]]], component: str) -> dict[str, Any]:
    (doc,) = [
        d for d in _workloads(k8s) if pod_labels(d).get("app.kubernetes.io/component") == component
    ]
    return doc


def test_selectors_match_labels(k8s: list[tuple[Path, dict[str, Any]]]) -> None:
    workloads = _workloads(k8s)
    for doc in workloads:
        selector = doc["spec"].get("selector", {}).get("matchLabels")
        if doc["kind"] in ("Deployment", "StatefulSet"):
            assert selector, doc["metadata"]["name"]
            assert selector.items() <= pod_labels(doc).items(), doc["metadata"]["name"]
    for _p, doc in k8s:
        if doc["kind"] == "Service" and doc["spec"].get("type") != "ExternalName":
            selector = doc["spec"]["selector"]
            targets = [w for w in workloads if selector.items() <= pod_labels(w).items()]
            assert targets, f"Service {doc['metadata']['name']} selects no pods"
            names = {
                p.get("name")
                for w in targets
                for c in pod_spec(w)["containers"]  # type: ignore[index]
                for p in c.get("ports", [])
            } | {
                p["containerPort"]
                for w in targets
                for c in pod_spec(w)["containers"]  # type: ignore[index]
                for p in c.get("ports", [])
            }
            for port in doc["spec"]["ports"]:
                assert port.get("targetPort", port["port"]) in names, doc["metadata"]["name"]
        if doc["kind"] == "PodDisruptionBudget":
            selector = doc["spec"]["selector"]["matchLabels"]
            assert [w for w in workloads if selector.items() <= pod_labels(w).items()]
        if doc["kind"] == "StatefulSet":
            services = [
                d
                for _q, d in k8s
                if d["kind"] == "Service" and d["metadata"]["name"] == doc["spec"]["serviceName"]
            ]
            assert services and services[0]["spec"].get("clusterIP") == "None"


def test_probes_point_at_declared_ports(k8s: list[tuple[Path, dict[str, Any]]]) -> None:
    probed = 0
    for doc in _workloads(k8s):
        for container in pod_spec(doc)["containers"]:  # type: ignore[index]
            ports = {p.get("name") for p in container.get("ports", [])} | {
                p["containerPort"] for p in container.get("ports", [])
            }
            for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                probe = container.get(kind)
                if not probe:
                    continue
                probed += 1
                for handler in ("httpGet", "tcpSocket"):
                    if handler in probe:
                        assert probe[handler]["port"] in ports, (container["name"], kind)
            if doc["kind"] in ("Deployment", "StatefulSet"):
                assert container.get("readinessProbe"), f"{container['name']} has no probe"
                assert container["resources"]["requests"], container["name"]
    assert probed >= 6


def test_probe_ports_are_the_configured_ones(k8s: list[tuple[Path, dict[str, Any]]]) -> None:
    api = pod_spec(_by_component(k8s, "api"))["containers"][0]  # type: ignore[index]
    port = {p["name"]: p["containerPort"] for p in api["ports"]}["http"]
    assert api["args"][api["args"].index("--port") + 1] == str(port)
    assert api["readinessProbe"]["httpGet"]["path"] == "/health"
    ingest = pod_spec(_by_component(k8s, "ingest"))["containers"][0]  # type: ignore[index]
    env = {e["name"]: e.get("value") for e in ingest["env"]}
    metrics = {p["name"]: p["containerPort"] for p in ingest["ports"]}["metrics"]
    assert env["CITYOPS_INGEST_METRICS_PORT"] == str(metrics)
    assert ingest["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_k8s_commands_are_cityops_commands(
    k8s: list[tuple[Path, dict[str, Any]]], parser: argparse.ArgumentParser
) -> None:
    for doc in _workloads(k8s):
        for container in pod_spec(doc)["containers"]:  # type: ignore[index]
            assert _is_cityops_image(container["image"])
            assert "command" not in container, "the image's entrypoint is cityops"
            _parse_command(parser, [str(a) for a in container["args"]])


def test_k8s_images_are_pinned(k8s: list[tuple[Path, dict[str, Any]]]) -> None:
    for doc in _workloads(k8s):
        for container in pod_spec(doc)["containers"]:  # type: ignore[index]
            _name, _, tag = container["image"].rpartition(":")
            assert tag and "/" not in tag and not tag.startswith("latest"), container["image"]


def _container_env(
    k8s: list[tuple[Path, dict[str, Any]]], container: Mapping[str, Any], pod_name: str
) -> dict[str, str]:
    """What the container's environment would hold, with sample values for secrets."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        (config,) = [
            d for _p, d in k8s if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name
        ]
        env.update(config["data"])
    samples = {
        "database-url": "postgresql://cityops:s3cr3t-Zq7@cityops-db:5432/cityops",
    }
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]
        if "fieldRef" in ref:
            assert ref["fieldRef"]["fieldPath"] == "metadata.name"
            env[item["name"]] = pod_name
        else:
            key = ref["secretKeyRef"]["key"]
            env[item["name"]] = samples.get(key, hashlib.sha256(key.encode()).hexdigest()[:40])
    return env


def test_k8s_settings_are_real_and_accepted(
    k8s: list[tuple[Path, dict[str, Any]]],
    settings_env_names: dict[str, type[BaseSettings]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for doc in _workloads(k8s):
        for container in pod_spec(doc)["containers"]:  # type: ignore[index]
            env = _container_env(k8s, container, f"{doc['metadata']['name']}-0")
            unknown = sorted(k for k in env if k not in settings_env_names)
            assert not unknown, f"{container['name']}: not cityops settings: {unknown}"
            _settings_from(env, monkeypatch, {settings_env_names[k] for k in env})


def test_no_plaintext_secret_in_manifests(k8s: list[tuple[Path, dict[str, Any]]]) -> None:
    for path, doc in k8s:
        assert doc["kind"] != "Secret", f"{path.name}: secrets are created by the operator"
        if doc["kind"] == "ConfigMap":
            for key, value in doc["data"].items():
                assert not SECRET_NAME.search(key), key
                assert not re.search(r"://[^/@\s]+:[^@\s]+@", value), key
    for doc in _workloads(k8s):
        for container in pod_spec(doc)["containers"]:  # type: ignore[index]
            for item in container.get("env", []):
                if SECRET_NAME.search(item["name"]) or item["name"] == "CITYOPS_DATABASE_URL":
                    assert "secretKeyRef" in item.get("valueFrom", {}), item["name"]


def test_ingest_replicas_share_a_subscription_with_distinct_client_ids(
    k8s: list[tuple[Path, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cityops.ingest.config import Settings

    ingest = _by_component(k8s, "ingest")
    # Pod names, hence client ids, are stable across restarts only in a StatefulSet.
    assert ingest["kind"] == "StatefulSet"
    replicas = ingest["spec"]["replicas"]
    assert replicas > 1
    container = pod_spec(ingest)["containers"][0]  # type: ignore[index]
    client_ids = set()
    for ordinal in range(replicas):
        pod = f"{ingest['metadata']['name']}-{ordinal}"
        env = _container_env(k8s, container, pod)
        with monkeypatch.context() as m:
            for key in list(os.environ):
                if key.startswith("CITYOPS_"):
                    m.delenv(key)
            for key, value in env.items():
                m.setenv(key, value)
            settings = Settings()
        assert settings.ingest_share_group, "several instances need a share group"
        client_ids.add(settings.ingest_client_id)
    assert len(client_ids) == replicas


def test_singletons_never_run_twice(k8s: list[tuple[Path, dict[str, Any]]]) -> None:
    for component in ("replanner", "traffic-control", "traffic-measures"):
        doc = _by_component(k8s, component)
        assert doc["kind"] == "Deployment"
        assert doc["spec"]["replicas"] == 1
        assert doc["spec"]["strategy"]["type"] == "Recreate"
    api = _by_component(k8s, "api")
    assert api["spec"]["replicas"] >= 2
    plan = _by_component(k8s, "plan")
    assert plan["spec"]["concurrencyPolicy"] == "Forbid"


def test_migrate_job_and_pods_run_unprivileged(k8s: list[tuple[Path, dict[str, Any]]]) -> None:
    migrate = _by_component(k8s, "migrate")
    assert migrate["kind"] == "Job"
    assert pod_spec(migrate)["containers"][0]["args"] == ["db", "migrate"]  # type: ignore[index]
    for doc in _workloads(k8s):
        spec = pod_spec(doc)
        assert spec is not None
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


# --- docs ------------------------------------------------------------------------------


def test_every_setting_is_documented_in_operations() -> None:
    """City IT configures from docs/operations.md: every variable of every settings class
    is named there (in full, or as `_SUFFIX` in a row that names its prefix's family)."""
    text = (REPO / "docs" / "operations.md").read_text()
    missing = []
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix") or "").upper()
        for name in sorted(setting_names(cls)):
            suffix = name.removeprefix(prefix)
            if name not in text and f"`_{suffix}`" not in text and f"_{suffix}`" not in text:
                missing.append(name)
    assert not missing, f"docs/operations.md does not mention {missing}"


def test_the_api_believes_its_proxy_and_the_daily_overview_is_scheduled(
    k8s: list[tuple[Path, dict[str, Any]]], rendered: dict[str, Any]
) -> None:
    """Two production gaps of issue 15: behind the proxy every citizen shared one rate
    limit (uvicorn trusts only 127.0.0.1), and `roadworks publish-daily` never ran."""
    api = _by_component(k8s, "api")
    env = _container_env(k8s, pod_spec(api)["containers"][0], "cityops-api-0")  # type: ignore[index]
    assert env["CITYOPS_API_FORWARDED_ALLOW_IPS"] == "*"
    compose_env = service_env(rendered["services"]["api"])
    assert compose_env["CITYOPS_API_FORWARDED_ALLOW_IPS"] == "*"
    overview = _by_component(k8s, "roadworks-overview")
    assert overview["kind"] == "CronJob"
    assert overview["spec"]["timeZone"] == "Europe/Berlin"
    assert overview["spec"]["schedule"] == "30 5 * * *"
    (container,) = pod_spec(overview)["containers"]  # type: ignore[index]
    assert container["args"][:2] == ["roadworks", "publish-daily"]


def test_every_service_reads_the_city_profile_from_its_mounted_folder(
    rendered: dict[str, Any], k8s: list[tuple[Path, dict[str, Any]]]
) -> None:
    """Every cityops container has the city's folder (profile, districts, extract) mounted
    read-only, and CITYOPS_CITY_PROFILE lies in it: no service falls back to a demo value,
    and the planners find the extract the profile names (issue 15)."""
    for name, svc in _cityops_services(rendered):
        profile = service_env(svc)["CITYOPS_CITY_PROFILE"]
        mounts = [v.split(":") for v in svc.get("volumes", [])]
        assert any(t == "/etc/cityops/city" and mode == "ro" and profile.startswith(t + "/")
                   for _src, t, mode in mounts), f"{name}: city folder not mounted ({mounts})"
    config = next(doc for _p, doc in k8s if doc["kind"] == "ConfigMap"
                  and doc["metadata"]["name"] == "cityops-config")
    assert config["data"]["CITYOPS_CITY_PROFILE"].startswith("/etc/cityops/city/")
    claims = {doc["metadata"]["name"] for _p, doc in k8s
              if doc["kind"] == "PersistentVolumeClaim"}
    pods = [(p, spec) for p, doc in k8s if (spec := pod_spec(doc)) is not None]
    assert pods
    for path, spec in pods:
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claim = volumes.get("city", {}).get("persistentVolumeClaim", {})
        assert claim.get("claimName") in claims and claim.get("readOnly"), path.name
        for container in spec["containers"]:
            assert {"name": "city", "mountPath": "/etc/cityops/city", "readOnly": True} in (
                container.get("volumeMounts", [])), f"{path.name}: {container['name']}"
