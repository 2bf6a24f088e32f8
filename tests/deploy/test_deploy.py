"""Every file in deploy/ is checked: it parses, and names real commands, settings and extras."""

from __future__ import annotations

import argparse
import ast
import configparser
import importlib
import json
import math
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from cli.api_cmd import is_loopback
from cli.main import build_parser
from farm.broker import queue_lists
from farm.keys import load_keys
from schemas import Settings, load_models
from schemas.names import queue_for_model

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
DOCKER = DEPLOY / "docker"
README = DEPLOY / "README.md"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

PREFIX = Settings.model_config["env_prefix"]
JOB_TIME_LIMIT = Settings.model_fields["job_time_limit"].default
MIN_STARTUP_S = 15 * 60
"""Seconds a worker must be given to load its model (a cold SD1.5 + LoRA download)."""
LOCAL_ONLY = {".env", "secrets", "__pycache__"}
"""Names in deploy/ that are an operator's local secrets or caches (ignored by git), not ours."""
SAMPLES = {"RF_WORKER_MODEL": "sd15-lcm", "RF_MODEL": "sd15-lcm"}
"""Values for placeholders without a default when a command is parsed."""
API_IMAGE, WORKER_IMAGE = "regionfarm-api", "regionfarm-worker"


# --- helpers ------------------------------------------------------------------------------


def deploy_files() -> list[Path]:
    return sorted(
        p
        for p in DEPLOY.rglob("*")
        if p.is_file() and not LOCAL_ONLY.intersection(p.relative_to(DEPLOY).parts)
    )


def yaml_docs(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def compose() -> dict[str, Any]:
    (doc,) = yaml_docs(DEPLOY / "compose.yaml")
    return doc


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml_docs(path)]


def k8s_find(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o
        for o in k8s_objects()
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


_PLACEHOLDER = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}|\$\((\w+)\)")


def substitute(text: str, env: dict[str, str] | None = None) -> str:
    """`text` with ${VAR:-default}, ${VAR} and $(VAR) filled in, and systemd's %i as GPU 0."""

    def fill(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if env and name in env:
            return env[name]
        if m.group(2) is not None:
            return m.group(2)
        return SAMPLES.get(name, "0")

    return _PLACEHOLDER.sub(fill, text).replace("%i", "0")


def duration_s(value: str | int) -> float:
    """Seconds of a compose duration ("3900s", "1h5m") or a plain number."""
    if isinstance(value, int | float):
        return float(value)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"bad duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def env_file(path: Path) -> dict[str, str]:
    """VAR=value lines of an env file (systemd / compose syntax; comments skipped)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: not VAR=value: {line!r}"
            out[name.strip()] = value.strip()
    return out


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep ExecStart's case
    parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    return parser


def unit_values(path: Path, key: str) -> list[str]:
    """Every value of `key` (units may repeat a key; configparser keeps only the last)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("=", 1)[1] for line in lines if line.startswith(f"{key}=")]


def containers(obj: dict[str, Any], *, init: bool = False) -> list[dict[str, Any]]:
    spec = obj["spec"]["template"]["spec"]
    return list(spec.get("containers", [])) + (list(spec.get("initContainers", [])) if init else [])


def regionfarm_args(argv: list[str]) -> list[str] | None:
    """The arguments after the `regionfarm` program in `argv` (after an optional sudo)."""
    while argv and argv[0] in ("sudo", "exec"):
        argv = argv[1:]
    if argv and PurePosixPath(argv[0]).name == "regionfarm":
        return argv[1:]
    return None


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def docker_cmd(path: Path) -> list[str]:
    (cmd,) = [json.loads(args) for word, args in dockerfile_instructions(path) if word == "CMD"]
    return cmd


def commands() -> list[tuple[str, list[str]]]:
    """Every command line that deploy/ runs, with where it is: (where, argv)."""
    found: list[tuple[str, list[str]]] = []
    for name, service in compose()["services"].items():
        cmd = service.get("command")
        if cmd is not None:
            argv = shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]
            found.append((f"compose.yaml:{name}", [substitute(a) for a in argv]))
    for path in sorted(DOCKER.glob("*.Dockerfile")):
        found.append((path.name, docker_cmd(path)))
    for obj in k8s_objects():
        if obj["kind"] in ("Deployment", "StatefulSet"):
            for c in containers(obj, init=True):
                argv = [*c.get("command", []), *c.get("args", [])]
                where = f"k8s {obj['metadata']['name']}/{c['name']}"
                found.append((where, [substitute(str(a)) for a in argv]))
    env = env_file(SYSTEMD / "regionfarm.env.example")
    for path in sorted(SYSTEMD.glob("*.service")):
        for line in unit_values(path, "ExecStart"):
            found.append((path.name, shlex.split(substitute(line.lstrip("-@+!:"), env))))
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL):
        for line in block.splitlines():
            for part in re.split(r"&&|;|\|", line):
                argv = shlex.split(part, comments=True)
                if argv:
                    found.append(("README.md", argv))
    return found


def regionfarm_commands() -> list[tuple[str, list[str]]]:
    out = []
    for where, argv in commands():
        args = regionfarm_args(argv)
        if args is not None:
            out.append((where, args))
    return out


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("the regionfarm parser has no subcommands")


def parse(args: list[str], where: str) -> argparse.Namespace:
    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: `regionfarm {shlex.join(args)}` is refused by the real parser")


def check_python_snippet(code: str, where: str) -> None:
    """The snippet compiles and everything it imports exists."""
    tree = ast.parse(code, filename=where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module}.{alias.name}?"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)


def set_settings_env(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> Settings:
    """Settings read from exactly `values` (other REGIONFARM_* variables removed)."""
    import os

    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)
    for name, value in values.items():
        if name.startswith(PREFIX):
            monkeypatch.setenv(name, value)
    return Settings()


def model_names() -> set[str]:
    return set(load_models(None))


def extras_installed(path: Path) -> list[set[str]]:
    runs = [args for word, args in dockerfile_instructions(path) if word == "RUN"]
    return [set(m.split(",")) for args in runs for m in re.findall(r"\.\[([\w,-]+)\]", args)]


# --- every file ---------------------------------------------------------------------------


def test_the_expected_files_exist() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in deploy_files()}
    for expected in (
        "README.md",
        "compose.yaml",
        "gen_config_reference.py",
        "prometheus/prometheus.yml",
        "docker/api.Dockerfile",
        "docker/worker.Dockerfile",
        "systemd/regionfarm-worker@.service",
        "systemd/regionfarm-api.service",
        "systemd/regionfarm-webhooks.service",
        "systemd/regionfarm.env.example",
    ):
        assert expected in names
    assert list(K8S.glob("*.yaml")), "no Kubernetes manifests"


def test_every_yaml_file_parses() -> None:
    paths = [p for p in deploy_files() if p.suffix in (".yaml", ".yml")]
    assert len(paths) >= 3
    for path in paths:
        assert yaml_docs(path), f"{path} is empty"


def test_every_file_starts_with_a_header_comment() -> None:
    for path in deploy_files():
        first = path.read_text(encoding="utf-8").lstrip().splitlines()[0]
        assert first.startswith(("#", '"""')), f"{path.relative_to(ROOT)} has no header comment"


def test_every_regionfarm_variable_is_a_setting() -> None:
    fields = set(Settings.model_fields)
    pattern = re.compile(rf"(?<![A-Za-z0-9_]){PREFIX}([A-Z0-9][A-Z0-9_]*)")
    seen = set()
    for path in deploy_files():
        for name in pattern.findall(path.read_text(encoding="utf-8")):
            seen.add(name)
            assert name.lower() in fields, (
                f"{path.relative_to(ROOT)}: {PREFIX}{name} is not a field of schemas.Settings; "
                f"a variable of its own must not use the {PREFIX} prefix"
            )
    assert {"REDIS_URL", "S3_ENDPOINT_URL", "API_KEYS_FILE", "MODEL_CACHE"} <= seen


def test_the_variable_check_catches_a_stray_name() -> None:
    pattern = re.compile(rf"(?<![A-Za-z0-9_]){PREFIX}([A-Z0-9][A-Z0-9_]*)")
    text = f"{PREFIX}WORKER_MODEL=x {PREFIX}* `{PREFIX}` X{PREFIX}NOPE"
    assert pattern.findall(text) == ["WORKER_MODEL"]


def test_no_minio() -> None:
    for path in deploy_files():
        if path.suffix in (".yaml", ".yml"):
            assert "minio/" not in path.read_text(encoding="utf-8").lower(), path


# --- commands -----------------------------------------------------------------------------


def test_every_regionfarm_command_is_accepted_by_the_real_parser() -> None:
    names = subcommands(build_parser())
    found = regionfarm_commands()
    assert len(found) >= 10
    for where, args in found:
        assert args and args[0] in names, (
            f"{where}: `regionfarm {shlex.join(args)}`: no such subcommand"
        )
        parse(args, where)


def test_the_processes_are_all_run_somewhere() -> None:
    kinds = set()
    for where, args in regionfarm_commands():
        ns = parse(args, where)
        if ns.command == "worker":
            kinds.add("webhooks" if ns.webhooks else "render")
        else:
            kinds.add(ns.command)
    assert {"api", "render", "webhooks", "keys"} <= kinds


def test_render_workers_name_a_served_model_and_a_metrics_port() -> None:
    models = model_names()
    for where, args in regionfarm_commands():
        ns = parse(args, where)
        if ns.command == "worker" and not ns.webhooks and where != "README.md":
            assert ns.model in models, f"{where}: model {ns.model!r} is not in the models file"
            assert ns.gpu is not None or ns.gpus == "all", f"{where}: not pinned to a GPU"
            assert ns.metrics_port, f"{where}: no --metrics-port (probes and Prometheus use it)"


def test_a_public_api_always_has_its_keys_file() -> None:
    """`regionfarm api` on a non-loopback address refuses to start without API keys."""
    key = f"{PREFIX}API_KEYS_FILE"
    environments = {
        "compose": compose()["x-farm-env"],
        "k8s": k8s_find("ConfigMap", "regionfarm-config")[0]["data"],
        "systemd": env_file(SYSTEMD / "regionfarm.env.example"),
    }
    checked = set()
    for where, args in regionfarm_commands():
        ns = parse(args, where)
        if ns.command != "api" or is_loopback(ns.host) or ns.insecure:
            continue
        kind = next((k for k in environments if where.startswith(k)), None)
        kind = "systemd" if where.endswith(".service") else kind
        if kind is None:  # the image's default CMD: the deployment provides the keys file
            assert where.endswith("Dockerfile"), where
            continue
        assert key in environments[kind], f"{where}: public API without {key}"
        checked.add(kind)
    assert checked == set(environments)


def test_python_snippets_compile_and_import_what_exists() -> None:
    snippets = []
    for name, service in compose()["services"].items():
        cmd = service.get("command")
        if isinstance(cmd, list) and cmd[:2] == ["python", "-c"]:
            snippets.append((f"compose {name}", cmd[2]))
    for obj in k8s_objects():
        if obj["kind"] == "Deployment":
            for c in containers(obj, init=True):
                if c.get("command", [])[:2] == ["python", "-c"]:
                    snippets.append((f"k8s {c['name']}", c["command"][2]))
    assert len(snippets) >= 2
    for where, code in snippets:
        check_python_snippet(code, where)


# --- images -------------------------------------------------------------------------------


def test_dockerfiles_install_extras_that_exist() -> None:
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    for path in sorted(DOCKER.glob("*.Dockerfile")):
        installed = extras_installed(path)
        assert installed, f"{path.name} does not pip install the package with extras"
        for names in installed:
            assert names <= extras, f"{path.name}: extras {names - extras} are not in pyproject"
    assert extras_installed(DOCKER / "api.Dockerfile") == [{"api"}]
    assert {"api", "worker"} <= set().union(*extras_installed(DOCKER / "worker.Dockerfile"))


def test_the_api_image_never_installs_torch() -> None:
    for word, args in dockerfile_instructions(DOCKER / "api.Dockerfile"):
        if word == "RUN":
            assert "torch" not in args.lower(), args
            extras = [e for group in re.findall(r"\[([^\]]*)\]", args) for e in group.split(",")]
            assert "worker" not in extras, args
        if word == "FROM":
            assert args.startswith("python:3.11-slim")


def test_the_worker_image_installs_the_pinned_cuda_torch_first() -> None:
    pin = re.search(r"TORCH_SPEC \?= torch==([\w.]+)", (ROOT / "Makefile").read_text())
    assert pin, "the Makefile's torch pin moved"
    steps = dockerfile_instructions(DOCKER / "worker.Dockerfile")
    args = {a.split("=")[0]: a.split("=", 1)[1] for w, a in steps if w == "ARG" and "=" in a}
    assert args["TORCH_VERSION"] == pin.group(1)
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:12.")
    runs = [a for w, a in steps if w == "RUN"]
    torch_at = next(i for i, a in enumerate(runs) if "torch==${TORCH_VERSION}" in a)
    assert "download.pytorch.org/whl/${TORCH_CUDA}" in runs[torch_at]
    package_at = next(i for i, a in enumerate(runs) if re.search(r"\.\[[\w,]*worker", a))
    assert torch_at < package_at


def test_dockerfiles_copy_the_package_and_run_as_a_user() -> None:
    packages = {
        p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    readme = PYPROJECT["project"]["readme"]
    for path in sorted(DOCKER.glob("*.Dockerfile")):
        steps = dockerfile_instructions(path)
        copied = set()
        for word, args in steps:
            if word == "COPY":
                *sources, _dest = args.split()
                for source in sources:
                    assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such path"
                    copied.add(source.rstrip("/"))
        assert {"pyproject.toml", readme, *packages} <= copied, path.name
        users = [a for w, a in steps if w == "USER"]
        assert users and users[-1] not in ("root", "0"), f"{path.name} runs as root"
        assert regionfarm_args(docker_cmd(path)) is not None
        ignore = (DOCKER / f"{path.name}.dockerignore").read_text(encoding="utf-8").splitlines()
        assert "*" in ignore, "the build context is an allow-list"
        for needed in {"pyproject.toml", readme, *packages}:
            assert f"!{needed}" in ignore or f"!{needed}/" in ignore, f"{needed} is ignored"


def test_image_commands_and_health_checks() -> None:
    api = dockerfile_instructions(DOCKER / "api.Dockerfile")
    assert docker_cmd(DOCKER / "api.Dockerfile")[:2] == ["regionfarm", "api"]
    assert any(w == "HEALTHCHECK" and "/healthz" in a for w, a in api)
    worker = dockerfile_instructions(DOCKER / "worker.Dockerfile")
    assert docker_cmd(DOCKER / "worker.Dockerfile")[:2] == ["regionfarm", "worker"]
    env = " ".join(a for w, a in worker if w == "ENV")
    cache = re.search(rf"{PREFIX}MODEL_CACHE=(\S+)", env)
    assert cache
    volumes = [json.loads(a) for w, a in worker if w == "VOLUME"]
    assert any(cache.group(1).startswith(v.rstrip("/") + "/") for vs in volumes for v in vs)


# --- compose ------------------------------------------------------------------------------


def compose_workers() -> dict[str, dict[str, Any]]:
    out = {}
    for name, service in compose()["services"].items():
        args = regionfarm_args([substitute(str(a)) for a in service.get("command") or []])
        if args and args[0] == "worker" and "--webhooks" not in args:
            out[name] = service
    return out


def test_compose_has_the_services() -> None:
    services = compose()["services"]
    for name in ("redis", "seaweedfs", "create-bucket", "api", "webhooks", "flower", "prometheus"):
        assert name in services
    assert len(compose_workers()) >= 2
    assert "seaweedfs" in services["seaweedfs"]["image"]
    for name, service in services.items():
        for dep in service.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose()["volumes"], f"{name}: volume {source} undeclared"


def test_compose_redis_keeps_an_append_only_file() -> None:
    redis = compose()["services"]["redis"]
    cmd = " ".join(str(c) for c in redis["command"])
    assert "--appendonly yes" in cmd
    assert "--appendfsync everysec" in cmd
    assert "--maxmemory-policy noeviction" in cmd
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_compose_workers_reserve_one_nvidia_gpu_each_and_drain() -> None:
    devices_seen = []
    image_env = " ".join(
        a for w, a in dockerfile_instructions(DOCKER / "worker.Dockerfile") if w == "ENV"
    )
    cache = re.search(rf"{PREFIX}MODEL_CACHE=(\S+)", image_env).group(1)  # type: ignore[union-attr]
    for name, service in compose_workers().items():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia", name
        assert "gpu" in device["capabilities"], name
        assert len(device["device_ids"]) == 1, name
        devices_seen.append(device["device_ids"][0])
        assert duration_s(service["stop_grace_period"]) > JOB_TIME_LIMIT, name
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
        targets = [v.split(":")[1] for v in service["volumes"]]
        assert any(cache.startswith(t.rstrip("/") + "/") for t in targets), name
        assert WORKER_IMAGE in service["image"]
    assert len(set(devices_seen)) == len(devices_seen), "two workers share a GPU"


def test_compose_credentials_are_overridable_defaults() -> None:
    doc = compose()
    env = doc["x-farm-env"]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert re.fullmatch(rf"\$\{{{name}:-[^}}]+\}}", env[name]), name
    assert re.fullmatch(
        r"\$\{FLOWER_BASIC_AUTH:-[^}]+\}",
        doc["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"],
    )
    s3 = doc["configs"]["seaweedfs-s3"]["content"]
    assert "${AWS_ACCESS_KEY_ID:-" in s3 and "${AWS_SECRET_ACCESS_KEY:-" in s3
    identities = json.loads(substitute(s3))["identities"]
    assert identities[0]["credentials"][0]["accessKey"] == substitute(env["AWS_ACCESS_KEY_ID"])


def test_compose_api_and_webhooks_get_the_keys_file() -> None:
    doc = compose()
    path = doc["x-farm-env"][f"{PREFIX}API_KEYS_FILE"]
    for name in ("api", "webhooks"):
        secrets = doc["services"][name]["secrets"]
        assert any(path == f"/run/secrets/{s}" for s in secrets), name
    assert API_IMAGE in doc["services"]["api"]["image"]
    assert API_IMAGE in doc["services"]["webhooks"]["image"]


def test_compose_env_example_documents_every_knob() -> None:
    example = env_file(DEPLOY / "compose.env.example")
    lines = (DEPLOY / "compose.yaml").read_text(encoding="utf-8").splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    used = set(re.findall(r"\$\{(\w+)", code))
    assert used <= set(example), f"not in compose.env.example: {sorted(used - set(example))}"


def test_prometheus_scrapes_the_api_and_every_worker() -> None:
    (config,) = yaml_docs(DEPLOY / "prometheus" / "prometheus.yml")
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    api_args = regionfarm_args([str(a) for a in compose()["services"]["api"]["command"]])
    assert f"api:{parse(api_args or [], 'api').port}" in targets
    for name, service in compose_workers().items():
        args = regionfarm_args([substitute(str(a)) for a in service["command"]]) or []
        assert f"{name}:{parse(args, name).metrics_port}" in targets
    mount = compose()["services"]["prometheus"]["volumes"][0]
    assert (DEPLOY / mount.split(":")[0]).resolve() == DEPLOY / "prometheus" / "prometheus.yml"


# --- Kubernetes ---------------------------------------------------------------------------


def worker_deployments() -> list[tuple[dict[str, Any], argparse.Namespace]]:
    out = []
    for obj in k8s_find("Deployment"):
        for c in containers(obj):
            args = regionfarm_args([*c.get("command", []), *c.get("args", [])])
            if args and args[0] == "worker":
                ns = parse(args, obj["metadata"]["name"])
                if not ns.webhooks:
                    out.append((obj, ns))
    return out


def test_k8s_objects_are_well_formed_and_namespaced() -> None:
    objects = k8s_objects()
    kinds = {o["kind"] for o in objects}
    assert {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "StatefulSet",
        "PersistentVolumeClaim",
        "ScaledObject",
    } <= kinds
    assert kinds & {"ServiceMonitor", "PodMonitor"}
    (namespace,) = k8s_find("Namespace")
    for obj in objects:
        assert obj.get("apiVersion") and obj["metadata"].get("name"), obj
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace["metadata"]["name"], obj["kind"]
    for obj in k8s_find("Deployment") + k8s_find("StatefulSet"):
        labels = obj["spec"]["template"]["metadata"]["labels"]
        for key, value in obj["spec"]["selector"]["matchLabels"].items():
            assert labels[key] == value, obj["metadata"]["name"]


def test_k8s_references_resolve() -> None:
    configmaps = {o["metadata"]["name"]: o["data"] for o in k8s_find("ConfigMap")}
    secrets = {o["metadata"]["name"]: o["stringData"] for o in k8s_find("Secret")}
    claims = {o["metadata"]["name"] for o in k8s_find("PersistentVolumeClaim")}
    for obj in k8s_find("Deployment") + k8s_find("StatefulSet"):
        spec = obj["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims
            if "secret" in v:
                data = secrets[v["secret"]["secretName"]]
                assert all(item["key"] in data for item in v["secret"].get("items", []))
        for c in containers(obj, init=True):
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], var["name"]
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in templates, mount["name"]


def test_k8s_settings_and_the_keys_placeholder_are_valid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (config,) = k8s_find("ConfigMap", "regionfarm-config")
    (secret,) = k8s_find("Secret", "regionfarm-secrets")
    settings = set_settings_env(monkeypatch, {**config["data"], **secret["stringData"]})
    assert settings.redis_url and settings.s3_endpoint_url
    assert settings.default_model in model_names()
    keys = tmp_path / "api-keys.json"
    keys.write_text(secret["stringData"]["api-keys.json"], encoding="utf-8")
    assert load_keys(keys), "the placeholder keys file does not load: the API would not start"
    mounted = PurePosixPath(config["data"][f"{PREFIX}API_KEYS_FILE"])
    assert mounted.name == "api-keys.json"


def test_k8s_api_probes_readiness_and_liveness_without_a_gpu() -> None:
    (api,) = k8s_find("Deployment", "regionfarm-api")
    (c,) = containers(api)
    ns = parse(regionfarm_args(c["command"]) or [], "k8s api")
    assert ns.command == "api"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in (c["readinessProbe"], c["livenessProbe"]):
        assert ports.get(probe["httpGet"]["port"], probe["httpGet"]["port"]) == ns.port
    assert "nvidia.com/gpu" not in json.dumps(c["resources"])
    assert API_IMAGE in c["image"]
    (service,) = k8s_find("Service", "regionfarm-api")
    assert service["spec"]["ports"][0]["targetPort"] in ports
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in service["spec"]["selector"].items())


def test_k8s_workers_request_a_gpu_start_slowly_and_drain() -> None:
    (config,) = k8s_find("ConfigMap", "regionfarm-config")
    limit = float(config["data"].get(f"{PREFIX}JOB_TIME_LIMIT", JOB_TIME_LIMIT))
    found = worker_deployments()
    assert found
    for obj, ns in found:
        name = obj["metadata"]["name"]
        spec = obj["spec"]["template"]["spec"]
        (c,) = containers(obj)
        resources = c["resources"]
        assert int(resources["limits"]["nvidia.com/gpu"]) == 1, name
        assert int(resources["requests"].get("nvidia.com/gpu", 1)) == 1, name
        assert WORKER_IMAGE in c["image"]
        probe = c["startupProbe"]
        total = (
            probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]
        )
        assert total >= MIN_STARTUP_S, f"{name}: startupProbe gives the model {total} s"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for kind in ("startupProbe", "livenessProbe"):
            probe = c[kind]
            port = (probe.get("tcpSocket") or probe.get("httpGet"))["port"]
            assert ports.get(port, port) == ns.metrics_port, f"{name}: {kind} not on metrics port"
        grace = spec["terminationGracePeriodSeconds"]
        assert grace > JOB_TIME_LIMIT and grace > limit, f"{name}: grace {grace} s"
        env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
        cache = env.get(f"{PREFIX}MODEL_CACHE") or config["data"][f"{PREFIX}MODEL_CACHE"]
        claims = {v["name"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        mounts = [m["mountPath"] for m in c["volumeMounts"] if m["name"] in claims]
        assert any(cache.startswith(m.rstrip("/") + "/") or cache == m for m in mounts), name


def test_k8s_webhook_worker_has_the_keys_file() -> None:
    (config,) = k8s_find("ConfigMap", "regionfarm-config")
    keys_dir = str(PurePosixPath(config["data"][f"{PREFIX}API_KEYS_FILE"]).parent)
    webhooks = []
    for obj in k8s_find("Deployment"):
        for c in containers(obj):
            args = regionfarm_args(c.get("command", []))
            if not args or args[0] != "worker" or not parse(args, c["name"]).webhooks:
                continue
            webhooks.append(c)
            assert keys_dir in [m["mountPath"] for m in c["volumeMounts"]]
            assert "nvidia.com/gpu" not in json.dumps(c.get("resources", {}))
            assert API_IMAGE in c["image"], "the webhook worker needs no torch"
    assert webhooks


def test_k8s_redis_keeps_an_append_only_file_on_a_volume() -> None:
    (redis,) = k8s_find("StatefulSet")
    (c,) = containers(redis)
    args = " ".join(str(a) for a in c.get("args", []))
    assert "--appendonly yes" in args
    assert "--appendfsync everysec" in args
    assert "--maxmemory-policy noeviction" in args
    (template,) = redis["spec"]["volumeClaimTemplates"]
    data_dir = re.search(r"--dir (\S+)", args).group(1)  # type: ignore[union-attr]
    assert {"name": template["metadata"]["name"], "mountPath": data_dir} in c["volumeMounts"]
    services = {s["metadata"]["name"] for s in k8s_find("Service")}
    assert redis["spec"]["serviceName"] in services
    (secret,) = k8s_find("Secret")
    assert redis["spec"]["serviceName"] in secret["stringData"][f"{PREFIX}REDIS_URL"]


def test_keda_scales_the_worker_deployment_on_its_queue_lists() -> None:
    workers = {obj["metadata"]["name"]: ns for obj, ns in worker_deployments()}
    auths = {o["metadata"]["name"] for o in k8s_find("TriggerAuthentication")}
    scaled = k8s_find("ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == set(workers)
    for obj in scaled:
        target = obj["spec"]["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment"
        model = workers[target["name"]].model
        triggers = obj["spec"]["triggers"]
        assert all(t["type"] == "redis" for t in triggers)
        lists = {t["metadata"]["listName"] for t in triggers}
        assert f"render.{model}" in lists
        assert lists == set(queue_lists(queue_for_model(model))), "not every priority list"
        for t in triggers:
            assert int(t["metadata"]["listLength"]) >= 1
            assert t["authenticationRef"]["name"] in auths
            assert t["metadata"]["address"].split(".")[0] in {
                s["metadata"]["name"] for s in k8s_find("Service")
            }
        formula = obj["spec"]["advanced"]["scalingModifiers"]["formula"]
        assert set(re.findall(r"[a-z]\w*", formula)) == {t["name"] for t in triggers}
        assert obj["spec"]["minReplicaCount"] >= 1


def test_k8s_monitoring_selects_the_api_and_the_workers() -> None:
    pods = {
        o["metadata"]["name"]: o["spec"]["template"]["metadata"] for o in k8s_find("Deployment")
    }
    for monitor in k8s_find("ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [
            s
            for s in k8s_find("Service")
            if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
        ]
        assert services
        ports = {p["name"] for s in services for p in s["spec"]["ports"]}
        assert all(e["port"] in ports for e in monitor["spec"]["endpoints"])
    for monitor in k8s_find("PodMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        matched = [
            m for m in pods.values() if all(m["labels"].get(k) == v for k, v in selector.items())
        ]
        assert matched
    for meta in pods.values():
        notes = meta.get("annotations", {})
        if notes.get("prometheus.io/scrape") == "true":
            assert int(notes["prometheus.io/port"]) in (8000, 9200)


def test_k8s_images_carry_the_package_version() -> None:
    version = PYPROJECT["project"]["version"]
    for obj in k8s_find("Deployment"):
        for c in containers(obj, init=True):
            name, _, tag = c["image"].rpartition(":")
            if name.endswith(("regionfarm-api", "regionfarm-worker")):
                assert tag == version, c["image"]


# --- systemd ------------------------------------------------------------------------------


def test_systemd_units_parse_and_restart() -> None:
    units = sorted(SYSTEMD.glob("*.service"))
    assert {u.name for u in units} == {
        "regionfarm-worker@.service",
        "regionfarm-api.service",
        "regionfarm-webhooks.service",
    }
    script = next(iter(PYPROJECT["project"]["scripts"]))
    for path in units:
        parsed = unit(path)
        assert {"Unit", "Service", "Install"} <= set(parsed.sections()), path.name
        service = parsed["Service"]
        assert PurePosixPath(service["ExecStart"].split()[0]).name == script
        assert service["Restart"] == "always"
        assert int(service["TimeoutStopSec"]) > 0
        assert service.get("KillSignal", "SIGTERM") == "SIGTERM"
        assert "/etc/regionfarm/regionfarm.env" in unit_values(path, "EnvironmentFile")


def test_systemd_worker_is_per_gpu_and_outlasts_a_render() -> None:
    path = SYSTEMD / "regionfarm-worker@.service"
    service = unit(path)["Service"]
    env = env_file(SYSTEMD / "regionfarm.env.example")
    stop = int(service["TimeoutStopSec"])
    assert stop > JOB_TIME_LIMIT
    assert stop > float(env.get(f"{PREFIX}JOB_TIME_LIMIT", JOB_TIME_LIMIT))
    exec_start = service["ExecStart"]
    assert re.search(r"--gpu %i\b", exec_start)
    for var in re.findall(r"\$\{(\w+)\}", exec_start):
        assert var in env, f"ExecStart uses ${{{var}}}, which regionfarm.env.example does not set"
    assert env["RF_WORKER_MODEL"] in model_names()


def test_systemd_env_example_holds_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_file(SYSTEMD / "regionfarm.env.example")
    settings = set_settings_env(monkeypatch, env)
    assert settings.redis_url and settings.api_keys_file and settings.s3_endpoint_url


def test_compose_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: substitute(str(v)) for k, v in compose()["x-farm-env"].items()}
    settings = set_settings_env(monkeypatch, env)
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.job_time_limit == JOB_TIME_LIMIT


# --- README and its generated table -------------------------------------------------------


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(DEPLOY / "gen_config_reference.py"), *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)


def test_the_settings_table_is_current() -> None:
    done = run_generator("--check")
    assert done.returncode == 0, done.stderr
    text = README.read_text(encoding="utf-8")
    table = text.split("<!-- settings:begin -->")[1].split("<!-- settings:end -->")[0]
    rows = [line for line in table.splitlines() if line.startswith(f"| `{PREFIX}")]
    assert [r.split("`")[1] for r in rows] == [
        f"{PREFIX}{n.upper()}" for n in Settings.model_fields
    ]


def test_the_generator_detects_and_fixes_a_stale_table(tmp_path: Path) -> None:
    stale = tmp_path / "README.md"
    stale.write_text(README.read_text(encoding="utf-8").replace("| `regionfarm` |", "| `x` |"))
    assert run_generator("--check", "--readme", str(stale)).returncode == 1
    assert run_generator("--readme", str(stale)).returncode == 0
    assert run_generator("--check", "--readme", str(stale)).returncode == 0
    assert stale.read_text(encoding="utf-8") == README.read_text(encoding="utf-8")


def test_the_readme_names_every_piece() -> None:
    text = README.read_text(encoding="utf-8")
    for path in deploy_files():
        rel = path.relative_to(DEPLOY).as_posix()
        if rel in ("README.md", ".gitignore") or rel.endswith(".dockerignore"):
            continue
        shown = rel if rel.startswith(("docker/", "prometheus/")) else path.name
        assert shown in text, f"deploy/README.md does not mention {rel}"
    for topic in ("SeaweedFS", "MinIO", "## Sizing", "## Upgrade path", "pending measurement"):
        assert topic in text


def test_the_sizing_table_follows_its_formula() -> None:
    text = README.read_text(encoding="utf-8")
    cells = re.findall(r"(\d+(?:\.\d+)?) s: (\d+) jobs/h", text)
    assert len(cells) >= 3
    for seconds, per_hour in cells:
        assert int(per_hour) == math.floor(3600 / (float(seconds) + 0.5)), (seconds, per_hour)


def test_every_metric_the_code_defines_is_documented():
    readme = (DEPLOY / "README.md").read_text()
    names = set()
    for path in (ROOT / "api" / "metrics.py", ROOT / "worker" / "metrics.py"):
        names |= set(re.findall(r'"(regionfarm_[a-z_]+)"', path.read_text()))
    assert names and all(f"`{name}`" in readme for name in names), names
