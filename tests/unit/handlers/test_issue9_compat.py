"""Issue 9 handler compatibility, driven through ``ModelService`` in-process: image modes,
async handlers, service envelopes, metrics.yaml pre-registration, source_vocab.pt and the
``ts`` modules TorchServe's handlers and handler tests import."""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.support.compat_handlers import (
    ASYNC_CLASS_HANDLER,
    ASYNC_FUNCTION_HANDLER,
    CUSTOM_METRICS_HANDLER,
    METRICS_YAML,
    MNIST_HANDLER,
    MODE_HANDLER,
    MnistNet,
    gray_png,
    gray_tensor,
)
from tests.support.images import image_bytes
from tests.support.models import TinyTextClassifier, save_eager, write_spec
from tests.unit.handlers.helpers import body_json, load_service, make_request, write_handler
from torchwick.handlers.compat import ALIASES, PACKAGES, install
from torchwick.handlers.errors import HandlerLoadError
from torchwick.handlers.messages import LoadSpec


def _mnist_dir(model_dir: Path, source: str) -> tuple[LoadSpec, MnistNet]:
    torch.manual_seed(0)
    net = MnistNet().eval()
    model_file, weights = save_eager(net, model_dir)
    write_handler(model_dir, source)
    spec = write_spec(model_dir, "handler", model_file=model_file, serialized_file=weights)
    return spec, net


def test_grayscale_png_reaches_image_processing_as_one_channel(model_dir: Path) -> None:
    spec, _ = _mnist_dir(model_dir, MODE_HANDLER)
    harness = load_service(spec)
    (gray,) = harness.predict(make_request(gray_png()))
    (rgb,) = harness.predict(make_request(image_bytes(28, 28)))
    assert body_json(gray) == {"mode": "L", "shape": [1, 28, 28]}
    assert body_json(rgb) == {"mode": "RGB", "shape": [3, 28, 28]}


def test_mnist_style_handler_answers_the_model_digit(model_dir: Path) -> None:
    spec, net = _mnist_dir(model_dir, MNIST_HANDLER)
    harness = load_service(spec)
    pngs = [gray_png(seed) for seed in range(3)]
    answers = harness.predict(*(make_request(p) for p in pngs))
    with torch.no_grad():
        expected = net(torch.stack([gray_tensor(p) for p in pngs])).argmax(1).tolist()
    assert [body_json(a) for a in answers] == expected


def test_async_steps_and_async_function_entry_points(model_dir: Path) -> None:
    write_handler(model_dir, ASYNC_CLASS_HANDLER)
    harness = load_service(write_spec(model_dir, "handler"))
    first, second = harness.predict(make_request({"a": 1}), make_request("two"))
    assert body_json(first) == {"echo": {"a": 1}, "loop": True}
    assert body_json(second) == {"echo": "two", "loop": True}
    write_handler(model_dir, ASYNC_FUNCTION_HANDLER, name="afn.py")
    harness = load_service(write_spec(model_dir, "afn"))
    answers = harness.predict(make_request(b"x"), make_request(b"y"))
    assert [body_json(a) for a in answers] == [{"async": True, "ready": True, "n": 2}] * 2


ECHO = """
    def handle(data, context):
        if data is None:
            return None
        return [{"got": row} if not isinstance(row, (bytes, bytearray)) else row.decode()
                for row in data]
"""


def _enveloped(model_dir: Path, envelope: str) -> LoadSpec:
    write_handler(model_dir, ECHO)
    spec = write_spec(model_dir, "handler", model_name="env")
    return dataclasses.replace(spec, service_envelope=envelope)


def test_json_envelope_joins_instances_and_rejects_a_malformed_body(model_dir: Path) -> None:
    harness = load_service(_enveloped(model_dir, "json"))
    good = make_request({"instances": [[1, 2], {"b64": "YQ=="}]})
    bad = make_request(b"{not json")
    one, broken = harness.predict(good, bad)
    assert json.loads(one.body) == {"predictions": [{"got": [1, 2]}, "a"]}
    assert broken.status == 400 and "not valid JSON" in body_json(broken)["message"]


def test_kserve_envelope_predictions_and_explanations(model_dir: Path) -> None:
    harness = load_service(_enveloped(model_dir, "kserve"))
    (answer,) = harness.predict(make_request({"instances": [{"data": [1.0]}]}))
    assert body_json(answer) == {"predictions": [{"got": {"data": [1.0]}}]}
    explain = make_request({"instances": [3]}, headers=[("explain", "True")])
    assert body_json(harness.predict(explain)[0]) == {"explanations": [{"got": 3}]}
    (missing,) = harness.predict(make_request({"inputs": []}))
    assert missing.status == 400 and "instances" in body_json(missing)["message"]


V2_HANDLER = """
    def handle(data, context):
        if data is None:
            return None
        return [sum(sum(r) for r in row["data"]) if row["datatype"] != "BYTES" else row["data"]
                for row in data]
"""


def test_kservev2_envelope_reshapes_inputs_and_names_outputs(model_dir: Path) -> None:
    write_handler(model_dir, V2_HANDLER)
    spec = dataclasses.replace(
        write_spec(model_dir, "handler", model_name="v2"), service_envelope="kservev2"
    )
    harness = load_service(spec)
    body = {
        "id": "req-7",
        "inputs": [
            {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
            {"name": "t", "shape": [1], "datatype": "BYTES", "data": ["hi"]},
        ],
    }
    request = make_request(body)
    bad_shape = make_request({"inputs": [{**body["inputs"][0], "shape": [3]}]})
    answer, rejected = harness.predict(request, bad_shape)
    assert body_json(answer) == {
        "id": "req-7",
        "model_name": "v2",
        "model_version": "1.0",
        "outputs": [
            {"name": "x", "datatype": "INT64", "data": [10], "shape": [1]},
            {"name": "t", "datatype": "BYTES", "data": ["hi"], "shape": [1]},
        ],
    }
    assert rejected.status == 400 and "shape [3]" in body_json(rejected)["message"]


def test_metrics_yaml_is_preregistered_for_the_custom_metrics_handler(
    model_dir: Path, tmp_path: Path
) -> None:
    spec, _ = _mnist_dir(model_dir, CUSTOM_METRICS_HANDLER)
    without = load_service(spec)
    (failed,) = without.predict(make_request(gray_png()))
    assert failed.status == 500  # RequestBatchSize is declared only in metrics.yaml
    config = tmp_path / "metrics.yaml"
    config.write_text(METRICS_YAML)
    harness = load_service(dataclasses.replace(spec, metrics_config=str(config)))
    (answer,) = harness.predict(make_request(gray_png()))
    assert answer.status == 200 and isinstance(body_json(answer), int)
    (size,) = harness.metric("RequestBatchSize")
    assert size.metric_type == "gauge" and size.dimensions == (("ModelName", "m"),)
    (count,) = harness.metric("InferenceRequestCount")
    assert count.dimensions == ()
    assert harness.metric("PostprocessCallCount")[0].dimensions == (
        ("ModelName", "m"),
        ("Level", "Model"),
    )
    config.write_text("model_metrics:\n  counter:\n    - name: X\n      unit: [")
    with pytest.raises(HandlerLoadError, match=r"metrics\.yaml \(line \d+\)"):
        load_service(dataclasses.replace(spec, metrics_config=str(config)))


def _fake_torchtext_vocab(itos: list[str], default: int) -> bytes:
    """Bytes laid out as ``torch.save(build_vocab_from_iterator(...))`` writes them."""
    names = ["torchtext", "torchtext.vocab", "torchtext._torchtext", "torchtext.vocab.vocab"]
    modules = {name: types.ModuleType(name) for name in names}

    class Native:
        def __init__(self) -> None:
            self.itos = itos

        def __getstate__(self) -> object:
            return ("0.0.2", [default], list(self.itos), [])

    class Vocab(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vocab = Native()

    for cls, module in ((Native, "torchtext._torchtext"), (Vocab, "torchtext.vocab.vocab")):
        cls.__module__, cls.__qualname__, cls.__name__ = module, "Vocab", "Vocab"
        modules[module].Vocab = cls
    sys.modules.update(modules)
    try:
        buffer = io.BytesIO()
        torch.save(Vocab(), buffer)
    finally:
        for name in names:
            sys.modules.pop(name, None)
    return buffer.getvalue()


def test_text_classifier_reads_torchserve_source_vocab_pt(model_dir: Path) -> None:
    torch.manual_seed(0)
    model = TinyTextClassifier().eval()
    model_file, weights = save_eager(model, model_dir)
    itos = ["<unk>", "good", "movie", "good movie", "bad"]
    (model_dir / "source_vocab.pt").write_bytes(_fake_torchtext_vocab(itos, 0))
    spec = write_spec(model_dir, "text_classifier", model_file=model_file, serialized_file=weights)
    harness = load_service(spec)
    tokenizer = harness.service.entry.instance.tokenizer  # type: ignore[union-attr]
    # TorchServe's text classifier: punctuation removed, bigrams, unknown -> default index.
    assert tokenizer.encode("Good movie!! zzz") == [1, 2, 0, 3, 0]
    (answer,) = harness.predict(make_request("good movie"))
    assert answer.status == 200 and len(body_json(answer)) == 4
    (model_dir / "source_vocab.pt").write_bytes(_pickled_code())
    with pytest.raises(HandlerLoadError, match="not a readable torchtext vocabulary"):
        load_service(spec)


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


def _pickled_code() -> bytes:
    buffer = io.BytesIO()
    torch.save(_Boom(), buffer)
    return buffer.getvalue()


TS_MODULES = [
    "ts.context",
    "ts.version",
    "ts.service",
    "ts.utils.util",
    "ts.metrics.dimension",
    "ts.metrics.metric",
    "ts.metrics.metric_type_enum",
    "ts.metrics.metric_cache_errors",
    "ts.metrics.metric_cache_yaml_impl",
    "ts.metrics.metric_cache_abstract",
    "ts.metrics.caching_metric",
    "ts.metrics.metrics_store",
    "ts.metrics.unit",
    "ts.handler_utils.utils",
    "ts.handler_utils.timer",
    "ts.handler_utils.micro_batching",
    "ts.handler_utils.text_utils",
    "ts.protocol.otf_message_handler",
    "ts.torch_handler.base_handler",
    "ts.torch_handler.vision_handler",
    "ts.torch_handler.image_classifier",
    "ts.torch_handler.image_segmenter",
    "ts.torch_handler.object_detector",
    "ts.torch_handler.text_handler",
    "ts.torch_handler.text_classifier",
    "ts.torch_handler.densenet_handler",
    "ts.torch_handler.request_envelope",
    "ts.torch_handler.request_envelope.base",
    "ts.torch_handler.request_envelope.body",
    "ts.torch_handler.request_envelope.json",
    "ts.torch_handler.request_envelope.kserve",
    "ts.torch_handler.request_envelope.kservev2",
    "ts.torch_handler.unit_tests.test_utils.mock_context",
    "ts.torch_handler.unit_tests.test_utils.model_dir",
    "ts.torch_handler.unit_tests.models.base_model",
]


def test_every_listed_ts_module_imports() -> None:
    install()
    assert set(TS_MODULES) <= set(ALIASES) | PACKAGES
    for name in TS_MODULES:
        importlib.import_module(name)
    from ts.version import __version__

    assert __version__ == "0.12.0"


def test_torchserve_style_unit_test_with_mock_context(tmp_path: Path) -> None:
    install()
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
    from ts.torch_handler.base_handler import BaseHandler
    from ts.torch_handler.request_envelope.body import BodyEnvelope
    from ts.torch_handler.request_envelope.json import JSONEnvelope
    from ts.torch_handler.unit_tests.models.base_model import save_pt_file
    from ts.torch_handler.unit_tests.test_utils.mock_context import MockContext

    base_model = importlib.import_module("ts.torch_handler.unit_tests.models.base_model")
    (tmp_path / "model.py").write_text(Path(base_model.__file__ or "").read_text())
    save_pt_file(str(tmp_path / "model.pt"))
    context = MockContext(model_dir=str(tmp_path), model_file="model.py")
    handler = BaseHandler()
    handler.initialize(context)
    assert handler.handle([[1.0, 2.0], [4.0, 3.0]], context) == [1, 0]
    assert [m.name for m in context.metrics.store] == ["HandlerTime"]
    rows = [
        {"body": {"instances": [[1.0, 2.0]]}},
        {"body": {"instances": [[4.0, 3.0], [5.0, 6.0]]}},
    ]
    assert JSONEnvelope(handler.handle).handle(rows, context) == [
        '{"predictions": [1]}',
        '{"predictions": [0, 1]}',
    ]
    assert BodyEnvelope(handler.handle).handle([{"body": [1.0, 2.0]}], context) == [1]
    config = tmp_path / "metrics.yaml"
    config.write_text(METRICS_YAML)
    cache = MetricsCacheYamlImpl(config_file_path=str(config))
    cache.initialize_cache()
    assert "gauge:RequestBatchSize" in cache.cache_keys()
