"""Input limits in the worker: pixels checked before an image is decoded, deep JSON refused,
and a request that fails to decode or has the wrong shape fails alone, never its batch."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.images import image_bytes
from tests.support.models import MLP, SmallCNN, model_dir_for, write_labels
from tests.unit.handlers.helpers import body_json, load_service, make_request
from torchwick.handlers.builtin.vision import decode_image
from torchwick.handlers.errors import InvalidInput
from torchwick.handlers.json_depth import json_too_deep


@pytest.fixture(autouse=True)
def _quiet_exporters() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_an_image_over_the_pixel_cap_is_refused_before_decoding() -> None:
    png = image_bytes(200, 100, "PNG", seed=1)  # 20,000 pixels
    assert decode_image(png, 20_000).size == (200, 100)
    with pytest.raises(InvalidInput, match=r"200x100 pixels, more than max_image_pixels"):
        decode_image(png, 19_999)


def test_a_small_png_declaring_gigapixels_costs_nothing() -> None:
    # A 1-pixel PNG whose header is rewritten to 12000 x 9000 (108 megapixels): below twice
    # PIL's own limit, so PIL only warns and would allocate it in full when loading.
    import struct
    import zlib

    png = bytearray(image_bytes(1, 1, "PNG", seed=2))
    start = png.index(b"IHDR")
    png[start + 4 : start + 12] = struct.pack(">II", 12_000, 9_000)
    crc = zlib.crc32(bytes(png[start : start + 17]))
    png[start + 17 : start + 21] = struct.pack(">I", crc)
    with pytest.raises(InvalidInput, match="12000x9000 pixels, more than max_image_pixels"):
        decode_image(bytes(png), 50_000_000)


def test_the_vision_handler_applies_max_image_pixels_per_request(model_dir: Path) -> None:
    torch.manual_seed(0)
    spec = model_dir_for(
        "eager",
        SmallCNN(),
        model_dir,
        "image_classifier",
        example=torch.randn(2, 3, 32, 32),
        config={"handler": {"resize": 40, "crop_size": 32, "topk": 3}},
    )
    write_labels(model_dir, [f"class{i}" for i in range(10)], as_lists=True)
    harness = load_service(dataclasses.replace(spec, max_image_pixels=64 * 64))
    small = make_request(image_bytes(48, 40, "PNG", seed=1), "image/png")
    big = make_request(image_bytes(100, 100, "PNG", seed=3), "image/png")
    responses = harness.predict(small, big, small)
    assert [r.status for r in responses] == [200, 400, 200]
    assert "max_image_pixels" in body_json(responses[1])["message"]


def test_deep_json_fails_alone_in_its_batch(model_dir: Path) -> None:
    torch.manual_seed(0)
    spec = model_dir_for("eager", MLP(), model_dir, "base_handler", example=torch.randn(2, 64))
    harness = load_service(dataclasses.replace(spec, max_json_depth=8))
    good = make_request(torch.rand(64).tolist())
    deep = make_request(b"[" * 5000 + b"]" * 5000, "application/json")
    responses = harness.predict(good, deep, good)
    assert [r.status for r in responses] == [200, 400, 200]
    assert "max_json_depth" in body_json(responses[1])["message"]


@pytest.mark.parametrize("runtime", ["eager", "torchscript"])
def test_a_wrong_shape_gets_400_alone_and_in_a_batch(model_dir: Path, runtime: str) -> None:
    torch.manual_seed(0)
    spec = model_dir_for(runtime, MLP(), model_dir, "base_handler", example=torch.randn(2, 64))
    harness = load_service(spec)
    good = make_request(torch.rand(64).tolist())
    wrong = make_request(torch.rand(7).tolist())
    # Before the model ever ran: the same forward on shape-only tensors fails too, so the
    # input's shape is what is wrong.
    (first,) = harness.predict(wrong)
    assert first.status == 400, first.body
    assert "input of shape [7] does not fit the model" in body_json(first)["message"]
    assert harness.predict(good)[0].status == 200
    # Now the model is known to work on [64]: a [7] input is the client's fault.
    (alone,) = harness.predict(wrong)
    assert alone.status == 400, alone.body
    assert "does not fit the model" in body_json(alone)["message"]
    responses = harness.predict(good, wrong, good)
    assert [r.status for r in responses] == [200, 400, 200]
    assert set(body_json(responses[1])) >= {"code", "type", "message"}


class Lookup(torch.nn.Module):
    """Token ids -> mean embedding; an id past the table fails on its value, not its shape."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(10, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids.long()).mean(dim=1)


def test_a_failure_that_depends_on_values_stays_the_models_500(model_dir: Path) -> None:
    spec = model_dir_for("eager", Lookup(), model_dir, "base_handler")
    harness = load_service(spec)
    (failed,) = harness.predict(make_request([1.0, 50.0]))
    assert failed.status == 500, failed.body
    (fine,) = harness.predict(make_request([1.0, 3.0]))
    assert fine.status == 200, fine.body


def test_json_depth_is_measured_outside_strings() -> None:
    assert not json_too_deep(b'{"a": "[[[[[[[[[[[["}', 3)
    assert json_too_deep(b'{"a": [[[[1]]]]}', 4)
    assert not json_too_deep(b'{"a": [[[1]]]}', 4)
    assert json_too_deep(b"[" * 100_000, 64)  # unterminated: the parser would still recurse
    assert not json_too_deep(b"[" + b"[1, 2]," * 10_000 + b"[3]]", 2)
