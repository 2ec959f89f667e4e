"""docker-compose.yml, the Dockerfiles and the k8s manifests, checked without an engine:
structure, env names against Settings, commands against the real CLI parser."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from core.settings import ENV_PREFIX, Settings
from worker.cli import register_api, register_serve, register_worker

REPO = Path(__file__).resolve().parents[2]
SETTINGS_ENV = {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uarnvc", exit_on_error=False)
    sub = p.add_subparsers(dest="command", required=True)
    for register in (register_serve, register_api, register_worker):
        register(sub)
    return p


def assert_uarnvc_command(cmd: list[str]) -> argparse.Namespace:
    assert cmd[0] == "uarnvc", cmd
    try:
        return parser().parse_args(cmd[1:])
    except (SystemExit, argparse.ArgumentError) as e:  # pragma: no cover - the message helps
        raise AssertionError(f"not a valid uarnvc command: {cmd}: {e}") from e


def assert_env_names(env: dict | list) -> None:
    names = env.keys() if isinstance(env, dict) else [e["name"] for e in env]
    for name in names:
        if name.startswith(ENV_PREFIX):
            assert name in SETTINGS_ENV, f"{name} is not a Settings field"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_services(compose: dict) -> None:
    services = compose["services"]
    assert {"api", "worker-cpu", "worker-gpu", "redis", "minio", "minio-init", "flower"} <= set(
        services
    )
    for name in ("api", "worker-cpu", "worker-gpu"):
        svc = services[name]
        assert_env_names(svc["environment"])
        args = assert_uarnvc_command(svc["command"])
        env = svc["environment"]
        assert env["UARNVC_BROKER_URL"].startswith("redis://redis:")
        assert env["UARNVC_STORE_URL"].startswith("s3://")
        assert env["UARNVC_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert "UARNVC_API_KEYS" in env
        if name == "api":
            assert args.command == "api" and args.host == "0.0.0.0"
        else:
            assert args.command == "worker"
    # The CPU workers also deliver webhooks (queue `hooks`): never behind a training clip.
    assert services["worker-cpu"]["command"][3] == "cpu,hooks"
    gpu = services["worker-gpu"]
    assert assert_uarnvc_command(gpu["command"]).queues == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "mc mb" in " ".join(services["minio-init"]["command"])
    assert "flower" in services["flower"]["command"]
    for name in ("api", "worker-gpu"):
        dockerfile = REPO / services[name]["build"]["dockerfile"]
        assert dockerfile.exists()


def test_compose_config_with_docker_client() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker client has no compose plugin here (no engine either)")
    r = subprocess.run(
        [docker, "compose", "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"UARNVC_API_KEYS": "k", "PATH": "/usr/bin:/bin:/usr/local/bin"},
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles(name: str) -> None:
    text = (REPO / "deploy" / name).read_text()
    assert text.startswith("#") and "FROM python:3.11" in text
    assert "torch==2.13.0" in text and "pip install ." in text
    assert "USER uarnvc" in text  # not root
    cmd = next(line for line in text.splitlines() if line.startswith("CMD "))
    assert_uarnvc_command(yaml.safe_load(cmd[4:]))


def test_k8s_manifests() -> None:
    docs = [d for d in yaml.safe_load_all((REPO / "deploy/k8s/uarnvc.yaml").read_text()) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [
        ("ConfigMap", "uarnvc-config"),
        ("Secret", "uarnvc-secrets"),
        ("Deployment", "uarnvc-api"),
        ("Service", "uarnvc-api"),
        ("Deployment", "uarnvc-worker-cpu"),
        ("Deployment", "uarnvc-worker-gpu"),
        ("Deployment", "uarnvc-redis"),
    ]:
        assert expected in kinds
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"]
        if d["kind"] in ("ConfigMap", "Secret"):
            assert_env_names(d.get("data") or d.get("stringData"))
        if d["kind"] == "Deployment":
            spec = d["spec"]
            assert (
                spec["selector"]["matchLabels"].items()
                <= spec["template"]["metadata"]["labels"].items()
            )
            for c in spec["template"]["spec"]["containers"]:
                assert_env_names(c.get("env", []))
                if c["command"][0] == "uarnvc":
                    assert_uarnvc_command(c["command"])
    gpu = next(d for d in docs if d["metadata"]["name"] == "uarnvc-worker-gpu")
    container = gpu["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert assert_uarnvc_command(container["command"]).queues == "gpu"
    api = next(
        d for d in docs if d["metadata"]["name"] == "uarnvc-api" and d["kind"] == "Deployment"
    )
    probe = api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/readyz"
