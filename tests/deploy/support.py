"""Loading the deployment files and the facts of the code they must agree with.

No container engine or Kubernetes runs on the development machines, so the files under
`deploy/` are checked statically: parsed, interpolated the way Docker Compose does it,
validated against schemas, and compared with the code's settings and command line.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
K8S_DIR = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"

#: Environment variable names that hold a secret.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE|API_KEY", re.IGNORECASE)

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; $$ is a literal $.
_REF = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


class MissingVariableError(KeyError):
    """A `${VAR:?message}` whose variable is unset or empty."""


@dataclass(frozen=True)
class Reference:
    """One `${...}` in a compose value."""

    name: str
    required: bool
    default: str | None


def references(value: str) -> list[Reference]:
    """The variables a compose string refers to (Compose interpolation syntax)."""
    found = []
    for m in _REF.finditer(value):
        if m.group(0) == "$$":
            continue
        name = m.group("name") or m.group("bare")
        op = m.group("op") or ""
        found.append(
            Reference(name, required="?" in op, default=m.group("arg") if "-" in op else None)
        )
    return found


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """`value` with its references replaced as `docker compose` replaces them."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op") or "", m.group("arg") or ""
        current = env.get(name)
        unset_or_empty = current is None or (current == "" and op.startswith(":"))
        if op.endswith("?") and unset_or_empty:
            raise MissingVariableError(f"{name}: {arg}")
        if op.endswith("-") and unset_or_empty:
            return arg
        return current or ""

    return _REF.sub(repl, value)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """A parsed YAML tree with every string interpolated."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    return node


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def compose_variables(compose: Mapping[str, Any]) -> dict[str, list[Reference]]:
    """Every variable the compose file refers to, with each place's form."""
    out: dict[str, list[Reference]] = {}
    for s in strings(compose):
        for ref in references(s):
            out.setdefault(ref.name, []).append(ref)
    return out


def env_example() -> dict[str, str]:
    """`KEY=value` lines of `.env.example`, commented-out optional ones included."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if m:
            values[m.group(1)] = m.group(2).strip()
    return values


def sample_env(compose: Mapping[str, Any]) -> dict[str, str]:
    """A filled-in `.env`: a random-looking value for every required variable."""
    return {
        name: hashlib.sha256(name.encode()).hexdigest()[:40]
        if SECRET_NAME.search(name)
        else "https://cityops.example.org" if name.endswith("_URL")
        else f"/srv/cityops/{name.lower()}" if name.endswith("_DIR")  # a host folder
        else f"v-{name.lower()}"
        for name, refs in compose_variables(compose).items()
        if any(r.required for r in refs)
    }


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's `environment`, as a mapping (list form accepted too)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_args(command: Any) -> list[str]:
    """A compose `command` (list or string) as argv after the `cityops` entry point."""
    if isinstance(command, str):
        return command.split()
    return [str(c) for c in command]


def load_k8s() -> list[tuple[Path, dict[str, Any]]]:
    """Every document of every manifest in deploy/k8s, with its file."""
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def pod_spec(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload (Deployment, StatefulSet, Job, CronJob), else None."""
    kind = doc["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        spec: dict[str, Any] = doc["spec"]["template"]["spec"]
        return spec
    if kind == "CronJob":
        spec = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    return None


def pod_labels(doc: Mapping[str, Any]) -> dict[str, str]:
    if doc["kind"] == "CronJob":
        labels: dict[str, str] = doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"][
            "labels"
        ]
        return labels
    labels = doc["spec"]["template"]["metadata"]["labels"]
    return labels


def package_dirs() -> dict[str, str]:
    """pyproject's `package-dir`: import name -> folder."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapping: dict[str, str] = pyproject["tool"]["setuptools"]["package-dir"]
    return mapping


def settings_classes() -> list[type[BaseSettings]]:
    """Every pydantic-settings class of the code: the modules that mention BaseSettings
    are imported and their subclasses collected, so new settings are found on their own."""
    found: dict[str, type[BaseSettings]] = {}
    for package, folder in package_dirs().items():
        for path in sorted((REPO / folder).rglob("*.py")):
            if "BaseSettings" not in path.read_text():
                continue
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            module = importlib.import_module(".".join([package, *parts]))
            for obj in vars(module).values():
                if (
                    isinstance(obj, type)
                    and issubclass(obj, BaseSettings)
                    and obj is not BaseSettings
                ):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def setting_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads (prefix + field, or its alias)."""
    prefix = str(cls.model_config.get("env_prefix") or "")
    names = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        names.add((alias if isinstance(alias, str) else prefix + name).upper())
    return names


def grafana_provisioning_variables() -> set[str]:
    """The `${VAR}` names the Grafana provisioning files read from Grafana's environment."""
    names = set()
    for path in GRAFANA_PROVISIONING.rglob("*.yaml"):
        names.update(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", path.read_text()))
    return names
