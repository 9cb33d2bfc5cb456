"""Static checks of docker/ that run everywhere (CI has no container engine).

The Dockerfile is parsed into stages and instructions and checked for what the image
promises: a BASE_IMAGE argument used by every stage, a build stage apart from the runtime, a
non-root user, the volumes, a HEALTHCHECK on /ping, ``torchwick serve`` as the exec-form
entrypoint, OCI labels, and a context (.dockerignore) that holds every COPY source. The GPU
path (a CUDA base without Python, ``EXTRAS=gpu``, torch from PyPI) is checked as far as text
allows. The container config is read with torchwick's own parser, and the health check script
is run against a real server.
"""

from __future__ import annotations

import fnmatch
import json
import re
import runpy
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.server import running_server
from torchwick.server.config.keys import KEYS, META_KEYS
from torchwick.server.config.properties import parse_properties

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
HEALTHCHECK = DOCKER / "healthcheck.py"
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|python3-dev)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(path: Path) -> tuple[list[tuple[str, str]], list[Stage]]:
    """(instructions before the first FROM, stages); continuation lines joined, comments out."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    preamble: list[tuple[str, str]] = []
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
        else:
            preamble.append((keyword, args.strip()))
    return preamble, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[list[tuple[str, str]], list[Stage]]:
    return parse_dockerfile(DOCKER / "Dockerfile")


def test_every_stage_builds_on_base_image(
    dockerfile: tuple[list[tuple[str, str]], list[Stage]],
) -> None:
    preamble, stages = dockerfile
    assert ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm") in preamble
    names: set[str] = set()
    for stage in stages:
        assert stage.base == "${BASE_IMAGE}" or stage.base in names, stage.base
        if stage.name:
            names.add(stage.name)
    assert [s.name for s in stages] == ["python", "build", "runtime"]
    # A base without Python >= 3.11 (NVIDIA's CUDA images) gets one from apt.
    (python_setup,) = stages[0].all("RUN")
    assert "sys.version_info < (3, 11)" in python_setup
    assert "apt-get install" in python_setup and "python3-venv" in python_setup


def test_runtime_stage_is_unprivileged_and_complete(
    dockerfile: tuple[list[tuple[str, str]], list[Stage]],
) -> None:
    runtime = dockerfile[1][-1]
    users = runtime.all("USER")
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    for run in runtime.all("RUN"):
        assert not COMPILERS.search(run), f"the runtime stage installs build tools: {run}"
    copies_from_build = [c for c in runtime.all("COPY") if c.startswith("--from=")]
    assert copies_from_build == ["--from=build /opt/torchwick /opt/torchwick"]
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["torchwick", "serve"]
    assert runtime.all("STOPSIGNAL") == ["SIGTERM"]
    (healthcheck,) = runtime.all("HEALTHCHECK")
    assert "/opt/torchwick/healthcheck.py" in healthcheck
    (volumes,) = runtime.all("VOLUME")
    assert set(json.loads(volumes)) >= {
        "/home/model-server/model-store",
        "/home/model-server/logs",
        "/home/model-server/run",
    }
    assert "/home/model-server/run" in runtime.all("WORKDIR")
    env = " ".join(runtime.all("ENV"))
    assert "TS_CONFIG_FILE=/etc/torchwick/config.properties" in env
    labels = " ".join(runtime.all("LABEL"))
    for label in ("title", "version", "revision", "licenses", "created"):
        assert f"org.opencontainers.image.{label}=" in labels


def test_build_arguments_cover_the_gpu_variant(
    dockerfile: tuple[list[tuple[str, str]], list[Stage]],
) -> None:
    build = dockerfile[1][1]
    args = {a.split("=", 1)[0] for a in build.all("ARG")}
    assert {"TORCH_SPEC", "TORCH_INDEX_URL", "EXTRAS"} <= args
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(d.startswith("onnxruntime-gpu") for d in extras["gpu"])
    installs = " ".join(build.all("RUN"))
    assert '"/src[$EXTRAS]"' in installs and "$TORCH_INDEX_URL" in installs


def test_the_build_context_holds_every_copy_source(
    dockerfile: tuple[list[tuple[str, str]], list[Stage]],
) -> None:
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                keep = negate
        return keep

    for stage in dockerfile[1]:
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            for source in shlex.split(copy)[:-1]:
                assert (REPO / source).exists(), source
                assert included(source.rstrip("/")), f"{source} is excluded by .dockerignore"
    assert not included("tests/unit") and not included(".venv")


def test_container_config_binds_all_interfaces_with_auth_on_and_model_api_off() -> None:
    properties = parse_properties(
        (DOCKER / "config.properties").read_text(), source="docker/config.properties"
    )
    for key, value in properties.items():
        assert key in KEYS or key in META_KEYS, key
        if key in KEYS:
            KEYS[key].convert(key, value, Path("/"))
    for api in ("inference", "management", "metrics"):
        assert properties[f"{api}_address"].startswith("http://0.0.0.0:")
    assert properties["disable_token_authorization"] == "false"
    assert properties["enable_model_api"] == "false"
    assert properties["model_store"] == "/home/model-server/model-store"


def test_healthcheck_script_answers_for_a_real_server(tmp_path: Path) -> None:
    ping_url = runpy.run_path(str(HEALTHCHECK))["ping_url"]
    assert ping_url("http://0.0.0.0:8080") == "http://127.0.0.1:8080/ping"
    assert ping_url("https://[::]:9443") == "https://[::1]:9443/ping"
    with running_server(tmp_path) as server:
        env = {"TORCHWICK_INFERENCE_ADDRESS": server.inference_url, "PATH": ""}
        done = subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, check=False)
        assert done.returncode == 0
    closed = subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={"TORCHWICK_INFERENCE_ADDRESS": server.inference_url},
        capture_output=True,
        text=True,
        check=False,
    )
    assert closed.returncode == 1
    assert "healthcheck:" in closed.stderr


def test_compose_publishes_on_loopback_and_prometheus_scrapes_torchwick() -> None:
    import yaml

    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    torchwick = compose["services"]["torchwick"]
    assert torchwick["environment"]["TORCHWICK_TOKEN_FILE"] == "/run/secrets/tokens.json"
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["torchwick:8082"]
    assert job["metrics_path"] == "/metrics"
