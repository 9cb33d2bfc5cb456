"""Every default handler under every runtime, through a real server over real HTTP.

One server for the module, started with the product's secure defaults (token authorization
on, model API off) and ``load_models=all`` over a model store of archives built here with
``torchwick.archiver.archive_model``: ``image_classifier``, ``image_segmenter``,
``object_detector``, ``text_classifier`` and ``base_handler``, each as an eager model (state
dict + ``model.py``), TorchScript and ONNX, all three from the same random weights. Each
archive's ``model-config.yaml`` asks for batches of 4 with a generous ``maxBatchDelay``.

Each test sends a handful of requests twice over, all at once, so that they queue up behind
each other and share batches; one in each handful is bad. It checks that the bad ones get 400
with a JSON body naming the problem, the good ones 200 with the handler's documented output
(checked against the local copy of the weights where the handler's math is simple), that a
request's answer does not depend on its batch, that the three runtimes agree, and that the
server stays healthy with its worker ready.

torchwick forms batches by load (``maxBatchDelay`` is never waited out), so which requests
share a batch is up to timing here; ``test_torchserve_style_handler.py`` pins a batch down
exactly with a handler that reports its batch size.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml
from torch import nn

from tests.support.images import image_base64, image_bytes
from tests.support.models import (
    MLP,
    SmallCNN,
    TinyDetector,
    TinyDetectorTensors,
    TinySegmenter,
    TinyTextClassifier,
    model_dir_for,
    write_labels,
)
from tests.support.server import ServerOptions, ServerProcess, start_server
from torchwick.archiver import archive_model

RUNTIMES = ("eager", "torchscript", "onnx")
#: Batches of up to 4, waiting long enough that concurrent requests land in one batch.
BATCHING = {"batchSize": 4, "maxBatchDelay": 400, "minWorkers": 1, "maxWorkers": 1}
#: Every request and every wait in this module is bounded by this (seconds).
REQUEST_TIMEOUT_S = 60.0

CLASSES = [f"class{i}" for i in range(10)]
DETECTOR_LABELS = ["cat", "dog", "bird"]
TEXT_LABELS = ["negative", "neutral", "positive", "mixed"]
WORDS = ["<pad>", "<unk>", "the", "movie", "was", "great", "awful", "plot", "!", "acting"]
#: Which tokenizer file each runtime's text classifier ships (all three sources covered).
TOKENIZERS = {"eager": "vocab.txt", "torchscript": "tokenizer.json", "onnx": "source_vocab.json"}


@dataclass(frozen=True)
class Reply:
    """What came back over HTTP for one request."""

    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


# Archives ----------------------------------------------------------------------------------


def _archive(
    store: Path,
    source: Path,
    model: nn.Module,
    handler: str,
    *,
    runtime: str,
    handler_config: dict[str, Any] | None = None,
    **layout: Any,
) -> None:
    """Lay ``model`` out for ``runtime`` under ``source`` and archive it, named after
    ``source``, into ``store``.

    Every other file already in ``source`` (labels, tokenizer) goes in as an extra file.
    """
    name = source.name
    source.mkdir(parents=True, exist_ok=True)
    spec = model_dir_for(runtime, model, source, handler, **layout)
    entry = spec.manifest["model"]
    config = {**BATCHING, "responseTimeout": 60}
    if handler_config:
        config["handler"] = handler_config
    config_file = source / "model-config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    named = {entry.get("serializedFile"), entry.get("modelFile"), config_file.name}
    extras = sorted(p for p in source.iterdir() if p.name not in named)
    archive_model(
        model_name=name,
        version="1.0",
        handler=handler,
        serialized_file=source / entry["serializedFile"],
        model_file=source / entry["modelFile"] if entry.get("modelFile") else None,
        extra_files=extras or None,
        config_file=config_file,
        export_path=store,
    )


def _write_tokenizer(directory: Path, kind: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "vocab.txt":
        (directory / kind).write_text("\n".join(WORDS) + "\n")
    elif kind == "source_vocab.json":
        (directory / kind).write_text(json.dumps({w: i for i, w in enumerate(WORDS)}))
    else:
        from tokenizers import Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import WordLevel

        tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.save(str(directory / kind))


@dataclass
class Models:
    """The local copies of the served weights, to compute expected answers."""

    mlp: MLP
    text: TinyTextClassifier


def _build_store(store: Path, sources: Path) -> Models:
    torch.manual_seed(0)
    classifier, segmenter, detector = SmallCNN(), TinySegmenter(), TinyDetector()
    detector_tensors = TinyDetectorTensors()  # batched outputs for ONNX, same weights
    detector_tensors.inner = detector
    mlp, text = MLP().eval(), TinyTextClassifier().eval()
    detector_axes: dict[str, dict[int, str]] = {"input": {0: "n", 2: "h", 3: "w"}}
    detector_axes.update({k: {0: "n"} for k in ("boxes", "labels", "scores")})
    for runtime in RUNTIMES:
        # image_classifier: default transforms (256 -> 224), ImageNet-style label lists.
        src = sources / f"ic_{runtime}"
        src.mkdir(parents=True)
        write_labels(src, CLASSES, as_lists=True)
        _archive(
            store,
            src,
            classifier,
            "image_classifier",
            runtime=runtime,
            example=torch.randn(1, 3, 224, 224),
        )
        # image_segmenter: 16x16 per-pixel map.
        _archive(
            store,
            sources / f"seg_{runtime}",
            segmenter,
            "image_segmenter",
            runtime=runtime,
            handler_config={"resize": 16, "crop_size": 16},
            example=torch.randn(1, 3, 16, 16),
            script=True,
            onnx_kwargs={"output_names": ("out",)},
        )
        # object_detector: every candidate box (threshold 0), plain label names.
        src = sources / f"det_{runtime}"
        src.mkdir(parents=True)
        write_labels(src, DETECTOR_LABELS)
        _archive(
            store,
            src,
            detector,
            "object_detector",
            runtime=runtime,
            handler_config={"threshold": 0.0},
            example=torch.rand(1, 3, 24, 32),
            script=True,
            onnx_model=detector_tensors,
            onnx_kwargs={
                "output_names": ("boxes", "labels", "scores"),
                "dynamic_axes": detector_axes,
            },
        )
        # text_classifier: a different tokenizer source per runtime.
        src = sources / f"txt_{runtime}"
        _write_tokenizer(src, TOKENIZERS[runtime])
        write_labels(src, TEXT_LABELS)
        _archive(
            store,
            src,
            text,
            "text_classifier",
            runtime=runtime,
            example=torch.randint(1, 10, (2, 5)),
            script=True,
            onnx_kwargs={
                "input_names": ("ids",),
                "dynamic_axes": {"ids": {0: "n", 1: "len"}, "output": {0: "n"}},
            },
        )
        # base_handler: 64 numbers in, 10 out; the eager/TorchScript sample shape is
        # declared in the model-config, the ONNX graph declares its own.
        _archive(
            store,
            sources / f"base_{runtime}",
            mlp,
            "base_handler",
            runtime=runtime,
            handler_config=None if runtime == "onnx" else {"input_shape": [64]},
            example=torch.randn(2, 64),
        )
        if runtime != "onnx":
            # The same model with no declared shape, never sent a good input before the
            # wrong-shape test (which it must still answer 400).
            _archive(
                store,
                sources / f"undeclared_{runtime}",
                mlp,
                "base_handler",
                runtime=runtime,
                example=torch.randn(2, 64),
            )
    return Models(mlp=mlp, text=text)


# The server --------------------------------------------------------------------------------


@dataclass
class Served:
    server: ServerProcess
    models: Models
    inference: httpx.Client
    management: httpx.Client


@pytest.fixture(scope="module")
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("handlers_served")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter
        models = _build_store(root / "model_store", root / "sources")
    server = start_server(root, ServerOptions(load_models="all", start_timeout_s=120))
    failed_before = request.session.testsfailed
    try:
        yield Served(
            server,
            models,
            server.client("inference", timeout=REQUEST_TIMEOUT_S),
            server.client("management", timeout=REQUEST_TIMEOUT_S),
        )
    finally:
        server.stop()
        if request.session.testsfailed > failed_before:
            print(f"===== torchwick server output =====\n{server.logs()}", file=sys.stderr)


def _post_all(
    served: Served, model: str, bodies: Sequence[tuple[bytes, str | None]]
) -> list[Reply]:
    """POST every ``(body, content_type)`` to ``model`` twice over, all at once, so that the
    requests queue up behind each other and share batches; replies in the order given.

    Each request's answer must not depend on which batch it landed in: the two copies of
    every request get the same status and (numerically) the same body.
    """

    async def one(client: httpx.AsyncClient, body: bytes, content_type: str | None) -> Reply:
        headers = {"Content-Type": content_type} if content_type else {}
        response = await client.post(f"/predictions/{model}", content=body, headers=headers)
        return Reply(response.status_code, response.headers, response.content)

    async def run() -> list[Reply]:
        async with served.server.async_client("inference", timeout=REQUEST_TIMEOUT_S) as client:
            jobs = [one(client, body, ctype) for body, ctype in [*bodies, *bodies]]
            return await asyncio.wait_for(asyncio.gather(*jobs), REQUEST_TIMEOUT_S)

    replies = asyncio.run(run())
    first, second = replies[: len(bodies)], replies[len(bodies) :]
    for one_reply, other in zip(first, second, strict=True):
        assert one_reply.status == other.status
        if one_reply.status == 200:
            assert _numbers(other.json()) == pytest.approx(_numbers(one_reply.json()), abs=1e-4)
    return first


def _numbers(value: Any) -> list[Any]:
    """Every key and number in a JSON value, flattened in order."""
    if isinstance(value, dict):
        return [item for key, inner in value.items() for item in (key, *_numbers(inner))]
    if isinstance(value, list):
        return [item for inner in value for item in _numbers(inner)]
    return [value]


def _assert_bad_input(reply: Reply, *fragments: str) -> None:
    assert reply.status == 400, reply.body
    assert reply.headers.get("content-type", "").startswith("application/json")
    error = reply.json()
    assert error["code"] == 400 and error["type"] == "BadInput"
    for fragment in fragments:
        assert re.search(fragment, error["message"], re.IGNORECASE), error["message"]


def _assert_still_healthy(served: Served, model: str) -> None:
    assert served.server.alive()
    ping = served.inference.get("/ping")
    assert ping.status_code == 200 and ping.json() == {"status": "Healthy"}
    (description,) = served.management.get(f"/models/{model}").json()
    assert description["batchSize"] == BATCHING["batchSize"]
    assert description["maxBatchDelay"] == BATCHING["maxBatchDelay"]
    assert [w["status"] for w in description["workers"]] == ["READY"]


# image_classifier -------------------------------------------------------------------------


def test_image_classifier_batches_top5_over_all_runtimes(served: Served) -> None:
    png = image_bytes(64, 48, "PNG", seed=1)
    bodies = [
        (png, "image/png"),
        (b"this is not an image", "image/png"),
        (image_bytes(40, 56, "JPEG", seed=2), "image/jpeg"),
        (image_base64(64, 48, "PNG", seed=1).encode(), "text/plain"),
    ]
    answers = []
    for runtime in RUNTIMES:
        model = f"ic_{runtime}"
        good, bad, jpeg, base64_png = _post_all(served, model, bodies)
        _assert_bad_input(bad, "not a decodable image")
        for reply in (good, jpeg, base64_png):
            assert reply.status == 200, reply.body
            top5 = reply.json()
            assert len(top5) == 5 and set(top5) <= set(CLASSES)
            probabilities = list(top5.values())
            assert probabilities == sorted(probabilities, reverse=True)
            assert all(0.0 < p <= 1.0 for p in probabilities)
            assert sum(probabilities) <= 1.0 + 1e-6
        # The same image, raw or as base64, in one batch: the same answer.
        assert list(base64_png.json()) == list(good.json())
        assert list(base64_png.json().values()) == pytest.approx(list(good.json().values()))
        answers.append(good.json())
        _assert_still_healthy(served, model)
    # Same weights under every runtime: the same top-5.
    for other in answers[1:]:
        assert list(other) == list(answers[0])
        assert list(other.values()) == pytest.approx(list(answers[0].values()), abs=1e-4)


# image_segmenter --------------------------------------------------------------------------


def test_image_segmenter_pixel_maps_over_all_runtimes(served: Served) -> None:
    bodies = [
        (image_bytes(20, 16, "PNG", seed=3), "image/png"),
        (b"", "image/png"),
        (image_bytes(16, 30, "JPEG", seed=4), "image/jpeg"),
    ]
    maps = []
    for runtime in RUNTIMES:
        model = f"seg_{runtime}"
        first, empty, second = _post_all(served, model, bodies)
        _assert_bad_input(empty, "empty")
        for reply in (first, second):
            assert reply.status == 200, reply.body
            pixel_map = torch.tensor(reply.json())
            assert pixel_map.shape == (16, 16, 2)
            classes, probabilities = pixel_map[..., 0], pixel_map[..., 1]
            assert set(torch.unique(classes).tolist()) <= {0.0, 1.0, 2.0, 3.0}
            assert bool(((probabilities >= 0.25) & (probabilities <= 1.0)).all())
        maps.append(torch.tensor(first.json()))
        _assert_still_healthy(served, model)
    for other in maps[1:]:
        assert torch.allclose(other[..., 1], maps[0][..., 1], atol=1e-4)


# object_detector --------------------------------------------------------------------------


def test_object_detector_boxes_over_all_runtimes(served: Served) -> None:
    sizes = [(32, 24), (60, 40), (32, 24)]  # a batch of two sizes runs two forward passes
    bodies = [
        (image_bytes(sizes[0][0], sizes[0][1], "PNG", seed=5), "image/png"),
        (b"\x89PNG\r\n\x1a\ntruncated", "image/png"),
        (image_bytes(sizes[1][0], sizes[1][1], "JPEG", seed=6), "image/jpeg"),
        (image_bytes(sizes[2][0], sizes[2][1], "PNG", seed=7), "image/png"),
    ]
    answers = []
    for runtime in RUNTIMES:
        model = f"det_{runtime}"
        replies = _post_all(served, model, bodies)
        _assert_bad_input(replies[1], "not a decodable image")
        good = [replies[0], replies[2], replies[3]]
        for reply, (width, height) in zip(good, sizes, strict=True):
            assert reply.status == 200, reply.body
            detections = reply.json()
            assert isinstance(detections, list) and len(detections) == 3
            for detection in detections:
                score = detection.pop("score")
                ((label, box),) = detection.items()
                assert label in DETECTOR_LABELS and 0.0 <= score <= 1.0
                x1, y1, x2, y2 = box
                assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
        answers.append([r.json() for r in good])
        _assert_still_healthy(served, model)
    # The runtimes agree on the export size. (Tracing bakes TinyDetector's float(x.shape[3])
    # into the ONNX graph as a constant, so ONNX boxes for other sizes are scaled for 32x24.)
    for other in answers[1:]:
        for i in (0, 2):
            assert _numbers(other[i]) == pytest.approx(_numbers(answers[0][i]), abs=1e-4)


# text_classifier --------------------------------------------------------------------------


def _expected_text(model: TinyTextClassifier, texts: Sequence[str]) -> list[list[float]]:
    vocab = {w: i for i, w in enumerate(WORDS)}
    rows = []
    with torch.no_grad():
        for text in texts:
            words = re.findall(r"\w+|[^\w\s]", text.lower())
            ids = torch.tensor([vocab.get(w, vocab["<unk>"]) for w in words])
            rows.append(torch.softmax(model(ids, torch.tensor([0])), 1)[0].tolist())
    return rows


def test_text_classifier_batches_over_all_runtimes(served: Served) -> None:
    texts = ["The movie was great !", "awful plot", "The acting , the plot ! AWFUL"]
    bodies = [
        (texts[0].encode(), "text/plain"),
        (b"\xff\xfe\xfa not utf-8", "text/plain"),
        (texts[1].encode(), "application/octet-stream"),
        (json.dumps({"text": texts[2]}).encode(), "application/json"),
    ]
    expected = _expected_text(served.models.text, texts)
    for runtime in RUNTIMES:
        model = f"txt_{runtime}"
        first, bad, second, third = _post_all(served, model, bodies)
        _assert_bad_input(bad, "UTF-8")
        for reply, want in zip((first, second, third), expected, strict=True):
            assert reply.status == 200, reply.body
            scores = reply.json()
            assert list(scores) == TEXT_LABELS
            assert list(scores.values()) == pytest.approx(want, abs=1e-4)
            assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
        _assert_still_healthy(served, model)


# base_handler -----------------------------------------------------------------------------


def test_base_handler_tensors_over_all_runtimes(served: Served) -> None:
    torch.manual_seed(1)
    samples = [torch.randn(64) for _ in range(3)]
    with torch.no_grad():
        expected = served.models.mlp(torch.stack(samples)).tolist()
    bodies = [
        (json.dumps(samples[0].tolist()).encode(), "application/json"),
        (json.dumps(samples[1].tolist()).encode(), "application/json"),
        (json.dumps([1.0, 2.0, 3.0]).encode(), "application/json"),  # wrong shape
        (json.dumps(samples[2].tolist()).encode(), None),  # raw body, parsed as JSON
    ]
    for runtime in RUNTIMES:
        model = f"base_{runtime}"
        first, second, wrong, third = _post_all(served, model, bodies)
        _assert_bad_input(wrong, r"\[3\]", "64")
        for reply, want in zip((first, second, third), expected, strict=True):
            assert reply.status == 200, reply.body
            assert reply.json() == pytest.approx(want, abs=1e-4)
        _assert_still_healthy(served, model)


@pytest.mark.parametrize("runtime", ["eager", "torchscript"])
def test_a_wrong_shape_alone_is_400_before_the_model_ever_ran(served: Served, runtime: str) -> None:
    model = f"undeclared_{runtime}"
    wrong = served.inference.post(f"/predictions/{model}", json=[1.0, 2.0, 3.0])
    assert wrong.status_code == 400, wrong.text
    assert wrong.headers["content-type"] == "application/json"
    assert wrong.json()["type"] == "BadInput"
    assert "input of shape [3] does not fit the model" in wrong.json()["message"]
    good = served.inference.post(f"/predictions/{model}", json=[0.5] * 64)
    assert good.status_code == 200, good.text
    _assert_still_healthy(served, model)


def test_a_batch_of_only_bad_requests_leaves_the_worker_serving(served: Served) -> None:
    replies = _post_all(
        served,
        "base_eager",
        [(b"not json", "application/octet-stream"), (b"", None), (b'"text"', "application/json")],
    )
    _assert_bad_input(replies[0], "not JSON")
    _assert_bad_input(replies[1], "empty")
    _assert_bad_input(replies[2], "text")
    (after,) = _post_all(served, "base_eager", [(json.dumps([0.0] * 64).encode(), None)])
    assert after.status == 200 and len(after.json()) == 10
    _assert_still_healthy(served, "base_eager")
