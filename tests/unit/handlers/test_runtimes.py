"""``base_handler`` under every runtime, plus torch.compile, half precision and load errors."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.models import MLP, SmallCNN, model_dir_for, save_eager, write_spec
from tests.unit.handlers.helpers import Harness, body_json, load_service, make_request
from torchwick.handlers.service import HandlerLoadError

RUNTIMES = ["eager", "safetensors", "torchscript", "onnx"]


@pytest.fixture(autouse=True)
def _quiet_exporters() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _mlp(
    runtime: str, model_dir: Path, config: dict[str, Any] | None = None
) -> tuple[MLP, Harness]:
    torch.manual_seed(0)
    model = MLP().eval()
    spec = model_dir_for(
        runtime, model, model_dir, "base_handler", example=torch.randn(2, 64), config=config
    )
    return model, load_service(spec)


def _handler(harness: Harness) -> Any:
    """The loaded handler object (typed loosely: tests poke at its attributes)."""
    return harness.service.entry.instance


def _expected(model: torch.nn.Module, samples: list[torch.Tensor]) -> list[list[float]]:
    with torch.no_grad():
        result: list[list[float]] = model(torch.stack(samples)).tolist()
        return result


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_base_handler_tensor_batch(runtime: str, model_dir: Path) -> None:
    model, harness = _mlp(runtime, model_dir)
    samples = [torch.randn(64) for _ in range(3)]
    responses = harness.predict(
        make_request(samples[0].tolist()),
        make_request(torch.randn(32).tolist()),  # wrong length
        make_request(samples[1].tolist(), name="data"),
        make_request(b"\x00\x01not json", "application/octet-stream"),
        make_request(samples[2].tolist()),
    )
    assert [r.status for r in responses] == [200, 400, 200, 400, 200]
    assert "[32]" in body_json(responses[1])["message"]
    assert "not JSON" in body_json(responses[3])["message"]
    got = [body_json(responses[i]) for i in (0, 2, 4)]
    expected = _expected(model, samples)
    for row, want in zip(got, expected, strict=True):
        assert row == pytest.approx(want, abs=1e-4)


def test_only_bad_requests_skip_the_forward(model_dir: Path) -> None:
    _, harness = _mlp("eager", model_dir)
    responses = harness.predict(make_request("text is not a tensor"), make_request([[1, 2], [3]]))
    assert [r.status for r in responses] == [400, 400]
    assert "regular shape" in body_json(responses[1])["message"]


def test_declared_input_shape_is_enforced(model_dir: Path) -> None:
    torch.manual_seed(0)
    spec = model_dir_for(
        "eager",
        SmallCNN(),
        model_dir,
        "base_handler",
        config={"handler": {"input_shape": [3, None, None]}},
    )
    harness = load_service(spec)
    ok_small, ok_large, wrong = harness.predict(
        make_request(torch.rand(3, 8, 8).tolist()),
        make_request(torch.rand(3, 12, 10).tolist()),
        make_request(torch.rand(1, 8, 8).tolist()),
    )
    assert (ok_small.status, ok_large.status, wrong.status) == (200, 200, 400)
    assert "expects [3, 'any', 'any']" in body_json(wrong)["message"]


def test_half_precision(model_dir: Path, tmp_path: Path) -> None:
    model, half = _mlp("eager", model_dir, {"handler": {"half": True}})
    assert _handler(half).model.net[0].weight.dtype == torch.float16
    sample = torch.randn(64)
    (response,) = half.predict(make_request(sample.tolist()))
    assert response.status == 200
    assert body_json(response) == pytest.approx(_expected(model, [sample])[0], abs=5e-2)


def test_torch_compile_backend(model_dir: Path) -> None:
    model, harness = _mlp(
        "eager", model_dir, {"pt2": {"compile": {"enable": True, "backend": "eager"}}}
    )
    handler = _handler(harness)
    assert handler.loaded.eager_model is not None
    sample = torch.randn(64)
    (response,) = harness.predict(make_request(sample.tolist()))
    assert body_json(response) == pytest.approx(_expected(model, [sample])[0], abs=1e-4)


def test_torch_compile_failure_falls_back(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="torchwick.model"):
        model, harness = _mlp("eager", model_dir, {"pt2": "no_such_backend_xyz"})
        sample = torch.randn(64)
        (response,) = harness.predict(make_request(sample.tolist()))
    assert response.status == 200
    assert body_json(response) == pytest.approx(_expected(model, [sample])[0], abs=1e-4)
    assert "no_such_backend_xyz" in caplog.text


def test_handler_time_metric(model_dir: Path) -> None:
    _, harness = _mlp("eager", model_dir)
    harness.predict(make_request(torch.randn(64).tolist()))
    assert len(harness.metric("HandlerTime")) == 1 and len(harness.metric("PredictionTime")) == 1


def test_pickled_whole_model_is_refused(model_dir: Path) -> None:
    save_eager(MLP(), model_dir)
    torch.save(MLP(), model_dir / "full.pt")  # a pickle of the module, not a state dict
    spec = write_spec(model_dir, "base_handler", serialized_file="full.pt", model_file="model.py")
    with pytest.raises(HandlerLoadError) as info:
        load_service(spec)
    assert "weights_only" in info.value.message


def test_safetensors_without_model_class(model_dir: Path) -> None:
    save_eager(MLP(), model_dir, safetensors=True)
    spec = write_spec(model_dir, "base_handler", serialized_file="model.safetensors")
    with pytest.raises(HandlerLoadError, match="model class"):
        load_service(spec)


def test_state_dict_without_model_file_is_not_torchscript(model_dir: Path) -> None:
    save_eager(MLP(), model_dir)
    spec = write_spec(model_dir, "base_handler", serialized_file="model.pt")
    with pytest.raises(HandlerLoadError, match="not a TorchScript model"):
        load_service(spec)


def test_ambiguous_model_file(model_dir: Path) -> None:
    save_eager(MLP(), model_dir, [MLP, SmallCNN])
    spec = write_spec(model_dir, "base_handler", serialized_file="model.pt", model_file="model.py")
    with pytest.raises(HandlerLoadError, match=r"exactly one torch\.nn\.Module"):
        load_service(spec)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("runtime", ["eager", "torchscript", "onnx"])
def test_gpu_inference(runtime: str, model_dir: Path) -> None:
    torch.manual_seed(0)
    model = MLP().eval()
    spec = model_dir_for(runtime, model, model_dir, "base_handler", example=torch.randn(2, 64))
    from dataclasses import replace

    harness: Harness = load_service(replace(spec, gpu_id=0))
    handler = _handler(harness)
    assert str(handler.device) == "cuda:0"
    sample = torch.randn(64)
    (response,) = harness.predict(make_request(sample.tolist()))
    assert response.status == 200
    assert body_json(response) == pytest.approx(_expected(model, [sample])[0], abs=1e-3)
    if runtime == "onnx":
        providers = handler.model.session.get_providers()
        assert providers[0] in ("CUDAExecutionProvider", "CPUExecutionProvider")


@pytest.mark.gpu
@cuda
def test_gpu_half_precision(model_dir: Path) -> None:
    from dataclasses import replace

    torch.manual_seed(0)
    model = MLP().eval()
    spec = model_dir_for(
        "eager", model, model_dir, "base_handler", config={"handler": {"half": True}}
    )
    harness = load_service(replace(spec, gpu_id=0))
    sample = torch.randn(64)
    (response,) = harness.predict(make_request(sample.tolist()))
    assert body_json(response) == pytest.approx(_expected(model, [sample])[0], abs=5e-2)


def test_torch_compile_failure_at_first_call_falls_back(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from torch._dynamo import list_backends, register_backend

    if "tw_exploding_backend" not in list_backends(exclude_tags=()):

        def tw_exploding_backend(gm: Any, example_inputs: Any) -> Any:
            raise RuntimeError("backend exploded")

        register_backend(tw_exploding_backend)
    config = {"pt2": {"compile": {"enable": True, "backend": "tw_exploding_backend"}}}
    with caplog.at_level(logging.WARNING, logger="torchwick.model"):
        model, harness = _mlp("eager", model_dir, config)
        samples = [torch.randn(64), torch.randn(64)]
        first = harness.predict(make_request(samples[0].tolist()))
        second = harness.predict(make_request(samples[1].tolist()))
    assert [r.status for r in (*first, *second)] == [200, 200]
    assert body_json(second[0]) == pytest.approx(_expected(model, [samples[1]])[0], abs=1e-4)
    assert "running uncompiled from now on" in caplog.text
    handler = _handler(harness)
    assert handler.model is handler.loaded.eager_model


def test_training_checkpoint_is_unwrapped(model_dir: Path) -> None:
    torch.manual_seed(0)
    model = MLP().eval()
    save_eager(model, model_dir)
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, model_dir / "ckpt.pt")
    spec = write_spec(model_dir, "base_handler", serialized_file="ckpt.pt", model_file="model.py")
    harness = load_service(spec)
    sample = torch.randn(64)
    (response,) = harness.predict(make_request(sample.tolist()))
    assert body_json(response) == pytest.approx(_expected(model, [sample])[0], abs=1e-4)
