"""Default vision handlers under every runtime: classifier, segmenter, detector."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.images import image_base64, image_bytes
from tests.support.models import (
    BasicBlock,
    ResNet18,
    SmallCNN,
    TinyDetector,
    TinyDetectorTensors,
    TinySegmenter,
    model_dir_for,
    write_labels,
)
from tests.unit.handlers.helpers import Harness, body_json, load_service, make_request

RUNTIMES = ["eager", "torchscript", "onnx"]
CLASSIFIER_CONFIG = {"handler": {"resize": 40, "crop_size": 32, "topk": 3}}


@pytest.fixture(autouse=True)
def _quiet_exporters() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _classifier(runtime: str, model_dir: Path) -> Harness:
    torch.manual_seed(0)
    spec = model_dir_for(
        runtime,
        SmallCNN(),
        model_dir,
        "image_classifier",
        example=torch.randn(2, 3, 32, 32),
        config=CLASSIFIER_CONFIG,
    )
    write_labels(model_dir, [f"class{i}" for i in range(10)], as_lists=True)
    return load_service(spec)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_image_classifier_batch_with_a_bad_request(runtime: str, model_dir: Path) -> None:
    harness = _classifier(runtime, model_dir)
    png = image_bytes(48, 40, "PNG", seed=1)
    requests = [
        make_request(png, "image/png"),
        make_request(image_bytes(50, 64, "JPEG", seed=2), "image/jpeg"),
        make_request(b"definitely not an image", "image/png"),
        make_request(image_base64(48, 40, "PNG", seed=1)),  # text/plain base64
        make_request(torch.rand(3, 32, 32).tolist()),  # application/json nested list
        make_request(b""),
    ]
    responses = harness.predict(*requests)
    assert [r.status for r in responses] == [200, 200, 400, 200, 200, 400]
    bad = body_json(responses[2])
    assert bad["type"] == "BadInput" and "not a decodable image" in bad["message"]
    assert "empty" in body_json(responses[5])["message"]
    results = [body_json(r) for r in (responses[0], responses[1], responses[3], responses[4])]
    for result in results:
        assert len(result) == 3 and all(label.startswith("class") for label in result)
        probs = list(result.values())
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    # Raw bytes and their base64 form are the same image, and batching does not change it.
    assert results[0] == pytest.approx(results[2])
    (alone,) = harness.predict(make_request(png, "image/png"))
    assert body_json(alone).keys() == results[0].keys()
    assert list(body_json(alone).values()) == pytest.approx(list(results[0].values()), abs=1e-5)


def test_classifier_runtimes_agree(tmp_path: Path) -> None:
    image = make_request(image_bytes(64, 48, seed=3), "image/png")
    answers = []
    for runtime in RUNTIMES:
        harness = _classifier(runtime, tmp_path / runtime)
        (response,) = harness.predict(image)
        answers.append(body_json(response))
    for other in answers[1:]:
        assert other.keys() == answers[0].keys()
        assert list(other.values()) == pytest.approx(list(answers[0].values()), abs=1e-4)


def test_onnx_classifier_rejects_wrong_tensor_shape(model_dir: Path) -> None:
    harness = _classifier("onnx", model_dir)
    good, wrong = harness.predict(
        make_request(torch.rand(3, 32, 32).tolist()), make_request(torch.rand(3, 8, 8).tolist())
    )
    assert good.status == 200 and wrong.status == 400
    assert "[3, 8, 8]" in body_json(wrong)["message"]


def test_resnet18_classifier_with_imagenet_style_labels(model_dir: Path) -> None:
    torch.manual_seed(0)
    spec = model_dir_for(
        "eager",
        ResNet18(),
        model_dir,
        "image_classifier",
        classes=[BasicBlock, ResNet18],
        config={"handler": {"resize": 36, "crop_size": 32}},
    )
    write_labels(model_dir, [f"synset{i}" for i in range(1000)], as_lists=True)
    harness = load_service(spec)
    responses = harness.predict(*[make_request(image_bytes(40, 36, seed=s)) for s in range(3)])
    assert all(r.status == 200 for r in responses)
    top5 = body_json(responses[0])
    assert len(top5) == 5 and all(k.startswith("synset") for k in top5)


def test_explanations_integrated_gradients(model_dir: Path) -> None:
    harness = _classifier("eager", model_dir)
    explain = (("explain", "True"),)
    image = image_bytes(40, 40, seed=4)
    responses = harness.predict(
        make_request(image, "image/png", headers=explain),
        make_request(b"junk", "image/png", headers=explain),
    )
    assert [r.status for r in responses] == [200, 400]
    attributions = torch.tensor(body_json(responses[0]))
    assert attributions.shape == (3, 32, 32) and attributions.abs().sum() > 0


def test_explanations_refused_for_onnx(model_dir: Path) -> None:
    harness = _classifier("onnx", model_dir)
    (response,) = harness.predict(
        make_request(image_bytes(40, 40), "image/png", headers=(("explain", "True"),))
    )
    assert response.status == 400 and "ONNX" in body_json(response)["message"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_image_segmenter(runtime: str, model_dir: Path) -> None:
    torch.manual_seed(0)
    spec = model_dir_for(
        runtime,
        TinySegmenter(),
        model_dir,
        "image_segmenter",
        example=torch.randn(1, 3, 16, 16),
        script=True,
        config={"handler": {"resize": 16, "crop_size": 16}},
        onnx_kwargs={"output_names": ("out",)},
    )
    harness = load_service(spec)
    ok1, bad, ok2 = harness.predict(
        make_request(image_bytes(20, 16, seed=1)),
        make_request(b"\x89PNG\r\n\x1a\nbroken"),
        make_request(image_bytes(16, 30, "JPEG", seed=2)),
    )
    assert (ok1.status, bad.status, ok2.status) == (200, 400, 200)
    pixel_map = torch.tensor(body_json(ok1))
    assert pixel_map.shape == (16, 16, 2)
    classes, probs = pixel_map[..., 0], pixel_map[..., 1]
    assert set(torch.unique(classes).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert bool(((probs >= 0.25) & (probs <= 1.0)).all())


def _detector(runtime: str, model_dir: Path, threshold: float) -> Harness:
    torch.manual_seed(0)
    dynamic = {"input": {0: "n", 2: "h", 3: "w"}}
    dynamic.update({k: {0: "n"} for k in ("boxes", "labels", "scores")})
    spec = model_dir_for(
        runtime,
        TinyDetector(),
        model_dir,
        "object_detector",
        example=torch.rand(1, 3, 24, 32),
        script=True,
        config={"handler": {"threshold": threshold}},
        onnx_model=TinyDetectorTensors(),
        onnx_kwargs={"output_names": ("boxes", "labels", "scores"), "dynamic_axes": dynamic},
    )
    write_labels(model_dir, ["cat", "dog", "bird"])
    return load_service(spec)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_object_detector(runtime: str, model_dir: Path) -> None:
    harness = _detector(runtime, model_dir, threshold=0.0)
    small, bad, large = harness.predict(
        make_request(image_bytes(32, 24, seed=1)),
        make_request(b"GIF89a-not-really"),
        make_request(image_bytes(60, 40, seed=2)),  # another size: its own forward
    )
    assert (small.status, bad.status, large.status) == (200, 400, 200)
    for response, (width, height) in ((small, (32, 24)), (large, (60, 40))):
        detections = body_json(response)
        assert len(detections) == 3
        for detection in detections:
            score = detection.pop("score")
            ((label, box),) = detection.items()
            assert label in {"cat", "dog", "bird"} and 0.0 <= score <= 1.0
            x1, y1, x2, y2 = box
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height


def test_object_detector_threshold(model_dir: Path) -> None:
    harness = _detector("eager", model_dir, threshold=0.999)
    (response,) = harness.predict(make_request(image_bytes(32, 24, seed=1)))
    assert response.status == 200 and body_json(response) == []
