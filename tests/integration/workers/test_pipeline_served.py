"""Pipelined workers (``handler.pipeline_depth: 2``) through a real server and real workers.

One server, one model store: the same ``image_classifier`` archive (a small CNN, random
weights) twice, once serial and once pipelined with a decode pool, one worker each. The same
concurrent requests (JPEGs and PNGs of different sizes, two undecodable bodies among them) go
to both; every answer must be the same, each to its own request, and the bad ones must fail
alone with 400 (the images travel through shared memory, see ``shm_frames``). A model-config
with an invalid ``pipeline_depth`` is refused at registration with a 400 naming the key.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml

from tests.support.images import image_bytes
from tests.support.models import SmallCNN, model_dir_for, write_labels
from tests.support.server import ServerOptions, ServerProcess, running_server
from torchwick.archiver import archive_model

REQUEST_TIMEOUT_S = 60.0
HANDLER = {"resize": 40, "crop_size": 32, "topk": 3}
BATCHING = {"batchSize": 4, "maxBatchDelay": 200, "minWorkers": 1, "maxWorkers": 1}


def _archive(store: Path, sources: Path, name: str, config: dict[str, Any]) -> None:
    source = sources / name
    source.mkdir(parents=True)
    torch.manual_seed(0)  # the same weights in every archive
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = model_dir_for("eager", SmallCNN(), source, "image_classifier")
    write_labels(source, [f"class{i}" for i in range(10)])
    config_file = source / "model-config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    entry = spec.manifest["model"]
    archive_model(
        model_name=name,
        version="1.0",
        handler="image_classifier",
        serialized_file=source / entry["serializedFile"],
        model_file=source / entry["modelFile"],
        extra_files=[source / "index_to_name.json"],
        config_file=config_file,
        export_path=store,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("pipeline")
    store, sources = root / "model_store", root / "sources"
    store.mkdir()
    _archive(store, sources, "serial", {**BATCHING, "handler": HANDLER})
    piped = {**HANDLER, "pipeline_depth": 2, "preprocess_threads": 2}
    _archive(store, sources, "piped", {**BATCHING, "handler": piped})
    _archive(store, sources, "bad", {**BATCHING, "handler": {**HANDLER, "pipeline_depth": 9}})
    options = ServerOptions(
        load_models="serial.mar,piped.mar",
        disable_token_auth=True,
        enable_model_api=True,
        # Images of a kilobyte and more travel through shared memory: the pipelined worker
        # holds two batches' shared-memory regions at once.
        config={"ipc_shm_threshold": "1024"},
    )
    with running_server(root, options) as running:
        yield running


def _bodies() -> list[tuple[bytes, str]]:
    bodies = []
    for seed in range(10):
        fmt, ctype = ("JPEG", "image/jpeg") if seed % 2 else ("PNG", "image/png")
        bodies.append((image_bytes(40 + 3 * seed, 36 + 2 * seed, fmt, seed=seed), ctype))
    bodies.insert(3, (b"not an image at all", "image/jpeg"))
    bodies.insert(8, (b"\x89PNG broken", "image/png"))
    return bodies


async def _send_all(server: ServerProcess, model: str) -> list[tuple[int, Any]]:
    async with server.async_client(timeout=REQUEST_TIMEOUT_S) as client:

        async def one(body: bytes, ctype: str) -> tuple[int, Any]:
            reply = await client.post(
                f"/predictions/{model}", content=body, headers={"content-type": ctype}
            )
            return reply.status_code, reply.json()

        # Twice over, all at once: requests queue behind each other and share batches, so
        # the pipelined worker holds two batches while the first is in its forward pass.
        bodies = _bodies() * 2
        return list(await asyncio.gather(*(one(b, c) for b, c in bodies)))


def test_pipelined_answers_equal_serial_ones_and_bad_requests_fail_alone(
    server: ServerProcess,
) -> None:
    serial = asyncio.run(_send_all(server, "serial"))
    piped = asyncio.run(_send_all(server, "piped"))
    # Equal up to float rounding: which requests share a batch (and so the kernels' blocking)
    # is up to timing, on both servers.
    assert [s for s, _ in piped] == [s for s, _ in serial]
    for (_, got), (_, want) in zip(piped, serial, strict=True):
        if isinstance(want, dict) and "code" not in want:
            assert list(got) == list(want)
            assert list(got.values()) == pytest.approx(list(want.values()), abs=1e-5)
        else:
            assert got == want
    bad = {3, 8}
    for index, (status, body) in enumerate(piped):
        if index % len(_bodies()) in bad:
            assert status == 400 and body["code"] == 400, body
            assert "image" in body["message"]
        else:
            assert status == 200 and len(body) == 3, body
    # Each request got its own answer: different images, different answers.
    good = [
        tuple(round(v, 4) for v in body.values())
        for i, (_, body) in enumerate(piped[: len(_bodies())])
        if i not in bad
    ]
    assert len(set(good)) == len(good)


def test_the_pipelined_worker_stays_ready(server: ServerProcess) -> None:
    described = server.client("management").get("/models/piped").json()
    workers = described[0]["workers"]
    assert [w["status"] for w in workers] == ["READY"]
    assert server.client().get("/ping").json() == {"status": "Healthy"}


def test_an_invalid_pipeline_depth_is_refused_at_registration(server: ServerProcess) -> None:
    reply = server.client("management", timeout=REQUEST_TIMEOUT_S).post(
        "/models", params={"url": "bad.mar", "initial_workers": "1", "synchronous": "true"}
    )
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == 400 and "handler.pipeline_depth" in body["message"]
    assert server.alive()
    assert isinstance(server.client().get("/ping"), httpx.Response)
