"""Running the torchwick image with podman (or docker) for the container tests.

``docker/test.sh`` builds the image and names it in ``TORCHWICK_CONTAINER_IMAGE``; without that
variable the container tests skip with the reason. ``TORCHWICK_CONTAINER_ENGINE`` picks the
engine (``podman`` by default). With podman the container runs with ``--runtime runc`` and the
host network, as this project's machines need (shared/notes/ENVIRONMENT.md), so every listener,
the two gRPC servers included, is bound to 127.0.0.1 on a free port passed in through
``TORCHWICK_*_ADDRESS`` and ``TORCHWICK_GRPC_*_ADDRESS``/``TORCHWICK_GRPC_*_PORT`` (the image's
own 0.0.0.0:7070/7071 would collide with anything else on the machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.server import free_port

IMAGE_ENV = "TORCHWICK_CONTAINER_IMAGE"
ENGINE_ENV = "TORCHWICK_CONTAINER_ENGINE"
SKIP_REASON = (
    f"container tests are opt-in: run docker/test.sh (it builds the image and sets {IMAGE_ENV})"
)


def configured_image() -> str | None:
    """The image under test, or None when the container tests are not enabled."""
    return os.environ.get(IMAGE_ENV) or None


def engine() -> list[str]:
    """The engine's command prefix (podman gets the flags this machine needs)."""
    name = os.environ.get(ENGINE_ENV, "podman")
    if shutil.which(name) is None:
        raise RuntimeError(f"{ENGINE_ENV}={name}: not installed")
    return [name, "--runtime", "runc"] if Path(name).name == "podman" else [name]


@dataclass
class Container:
    """One detached container; ``stop`` sends SIGTERM and returns the exit status."""

    name: str
    inference_port: int
    management_port: int
    metrics_port: int
    grpc_inference_port: int
    grpc_management_port: int
    prefix: list[str] = field(default_factory=engine)

    def url(self, api: str) -> str:
        port = {
            "inference": self.inference_port,
            "management": self.management_port,
            "metrics": self.metrics_port,
        }[api]
        return f"http://127.0.0.1:{port}"

    def grpc_target(self, api: str) -> str:
        """``host:port`` of the gRPC ``inference`` or ``management`` server."""
        port = {"inference": self.grpc_inference_port, "management": self.grpc_management_port}
        return f"127.0.0.1:{port[api]}"

    def logs(self) -> str:
        done = subprocess.run(
            [*self.prefix, "logs", self.name], capture_output=True, text=True, check=False
        )
        return done.stdout + done.stderr

    def running(self) -> bool:
        done = subprocess.run(
            [*self.prefix, "inspect", "--format", "{{.State.Running}}", self.name],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() == "true"

    def wait_for_log(self, text: str, timeout: float) -> str:
        """Poll the container's output until ``text`` appears; raise with the log otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            logs = self.logs()
            if text in logs:
                return logs
            if not self.running():
                raise AssertionError(f"container exited before {text!r}:\n{logs[-6000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} after {timeout:.0f} s:\n{logs[-6000:]}")
            time.sleep(0.2)

    def healthcheck(self) -> int:
        """Run the image's HEALTHCHECK once; its exit status (0 healthy)."""
        done = subprocess.run(
            [*self.prefix, "healthcheck", "run", self.name],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.returncode

    def exec(self, *command: str) -> str:
        """Run ``command`` inside the container; its stdout (raises on failure)."""
        done = subprocess.run(
            [*self.prefix, "exec", self.name, *command],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def signal(self, name: str) -> None:
        subprocess.run([*self.prefix, "kill", "--signal", name, self.name], check=True)

    def wait(self, timeout: float) -> int:
        """The container's exit status once it has exited (raises after ``timeout``)."""
        done = subprocess.run(
            [*self.prefix, "wait", self.name],
            capture_output=True,
            text=True,
            check=True,
            timeout=timeout,
        )
        return int(done.stdout.strip().splitlines()[-1])

    def remove(self) -> None:
        subprocess.run([*self.prefix, "rm", "--force", self.name], capture_output=True, check=False)


def run_container(
    image: str,
    *,
    volumes: Sequence[tuple[Path, str, str]] = (),
    environment: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> Container:
    """Start ``image`` detached with every listener (REST and gRPC) on a free 127.0.0.1 port.

    ``volumes`` are ``(host_path, container_path, options)`` triples (``ro`` or ``rw``).
    """
    ports = [free_port() for _ in range(5)]
    container = Container(f"torchwick-test-{uuid.uuid4().hex[:10]}", *ports)
    env = {
        "TORCHWICK_INFERENCE_ADDRESS": f"http://127.0.0.1:{ports[0]}",
        "TORCHWICK_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{ports[1]}",
        "TORCHWICK_METRICS_ADDRESS": f"http://127.0.0.1:{ports[2]}",
        "TORCHWICK_GRPC_INFERENCE_ADDRESS": "127.0.0.1",
        "TORCHWICK_GRPC_INFERENCE_PORT": str(ports[3]),
        "TORCHWICK_GRPC_MANAGEMENT_ADDRESS": "127.0.0.1",
        "TORCHWICK_GRPC_MANAGEMENT_PORT": str(ports[4]),
        "OMP_NUM_THREADS": "1",
        **(environment or {}),
    }
    command = [*container.prefix, "run", "--detach", "--name", container.name]
    command += ["--network", "host", "--health-interval", "disable"]
    for host_path, target, options in volumes:
        command += ["--volume", f"{host_path}:{target}:{options}"]
    for key, value in env.items():
        command += ["--env", f"{key}={value}"]
    command += [image, *args]
    subprocess.run(command, check=True, capture_output=True)
    return container


def wait_ready(container: Container, timeout: float) -> None:
    """Poll ``/ping`` until it answers 200 (the startup models are loaded)."""
    deadline = time.monotonic() + timeout
    url = container.url("inference") + "/ping"
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if not container.running() or time.monotonic() > deadline:
            raise AssertionError(f"{url} never became healthy:\n{container.logs()[-6000:]}")
        time.sleep(0.2)
