"""Real worker processes, the real ModelService, and handler files written per test."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.versions import version_config
from torchwick.handlers.messages import InputParameter, MetricRecord, PredictRequest
from torchwick.server.settings import Settings
from torchwick.server.workers import WorkerPool, WorkerSupervisor

#: A module-level entry point (TorchServe style): ``handle(None, ctx)`` initialises.
ECHO_HANDLER = textwrap.dedent(
    """
    import logging
    import os
    import time

    from ts.handler_utils.utils import send_intermediate_predict_response

    logger = logging.getLogger("torchwick.model")


    def handle(data, context):
        if data is None:
            if os.path.exists("fail_load"):
                raise RuntimeError("cannot read the weights")
            if os.path.exists("slow_load"):
                time.sleep(60)
            return None
        out = []
        for idx, row in enumerate(data):
            body = row.get("body")
            if isinstance(body, (bytes, bytearray)):
                body = bytes(body).decode()
            if body == "crash":
                os._exit(3)
            if body.startswith("sleep "):
                time.sleep(float(body.split()[1]))
            if body == "stream":
                rid = {idx: context.get_request_id(idx)}
                send_intermediate_predict_response(["chunk"], rid, "Intermediate", 200, context)
            if body == "print":
                print("hello from the handler", flush=True)
                logger.info("a line from the model logger")
            if body.startswith("big "):
                body = "x" * int(body.split()[1])
            if body == "device":
                import torch

                gpu = context.system_properties.get("gpu_id")
                body = f"{gpu} {torch.cuda.is_available()}"
            if body == "threads":
                import torch

                body = f"{torch.get_num_threads()} {os.environ.get('OMP_NUM_THREADS')}"
            if body == "spin":
                body = f"{os.environ.get('GOMP_SPINCOUNT')} {os.environ.get('OMP_WAIT_POLICY')}"
            context.metrics.add_counter("Echoed", 1)
            out.append(body)
        return out
    """
)


def request(rid: str, body: str) -> PredictRequest:
    """One request whose body is ``body``."""
    return PredictRequest(rid, (), (InputParameter("body", body.encode(), "text/plain"),))


def batch(*bodies: str) -> list[PredictRequest]:
    """A batch with request ids r0, r1, ..."""
    return [request(f"r{i}", b) for i, b in enumerate(bodies)]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "echo.py").write_text(ECHO_HANDLER)
    return folder


class Harness:
    """A supervisor over one model folder; ``pool(**config)`` makes pools for it.

    ``supervisor_options`` go to ``WorkerSupervisor`` (e.g. ``max_load_failures``); the other
    keyword arguments are ``Settings``.
    """

    def __init__(
        self,
        tmp_path: Path,
        model_dir: Path,
        supervisor_options: dict[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        self.metrics: list[MetricRecord] = []
        self.settings = Settings(log_location=tmp_path / "logs", **settings)
        self.model_dir = model_dir
        self.supervisor = WorkerSupervisor(
            self.settings, on_metrics=self._metrics, **(supervisor_options or {})
        )
        self._count = 0

    def _metrics(self, model: str, version: str, records: Sequence[MetricRecord]) -> None:
        self.metrics.extend(records)

    def pool(self, **config: Any) -> WorkerPool:
        """A pool for ``echo`` 1.0; ``config`` replaces fields of its ``ModelVersionConfig``."""
        self._count += 1
        config.setdefault("response_timeout", 20)
        config.setdefault("startup_timeout", 60)
        config.setdefault("batch_size", 4)
        version = version_config(
            self.model_dir, name="echo", version="1.0", handler="echo.py", **config
        )
        return self.supervisor.create_pool(f"echo_{self._count}", version)

    def model_log(self) -> str:
        path = self.settings.log_location / "model_log.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
async def harness(tmp_path: Path, model_dir: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, model_dir, worker_heartbeat_s=0.25)
    yield h
    await h.supervisor.close()


HarnessFactory = Callable[..., Harness]


@pytest.fixture
async def make_harness(tmp_path: Path, model_dir: Path) -> AsyncIterator[HarnessFactory]:
    """Harnesses with their own supervisor options or settings; all closed afterwards."""
    made: list[Harness] = []

    def make(**options: Any) -> Harness:
        options.setdefault("worker_heartbeat_s", 0.25)
        made.append(Harness(tmp_path, model_dir, **options))
        return made[-1]

    yield make
    for harness in made:
        await harness.supervisor.close()
