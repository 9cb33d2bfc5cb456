"""``ts.*`` aliases, streamed intermediate responses and the custom-metrics API."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest

from tests.support.models import write_spec
from tests.unit.handlers.helpers import load_service, make_request, write_handler
from torchwick.handlers.compat import install_ts_compat
from torchwick.handlers.context import Context
from torchwick.handlers.metrics import Dimension, MetricTypes


def test_ts_modules_are_torchwick_modules() -> None:
    install_ts_compat()
    ts = importlib.import_module
    import torchwick.handlers.base_handler as ours

    assert ts("ts.torch_handler.base_handler") is ours
    assert ts("ts.context").Context is Context
    assert ts("ts.metrics.dimension").Dimension is Dimension
    assert ts("ts.metrics.metric_type_enum").MetricTypes is MetricTypes
    assert issubclass(ts("ts.torch_handler.image_classifier").ImageClassifier, ours.BaseHandler)
    assert ts("ts.utils.util").PT2Backend("inductor").value == "inductor"
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("ts.model_service_worker")


def test_a_real_ts_package_is_replaced() -> None:
    fake = types.ModuleType("ts")
    fake.__path__ = []
    sys.modules["ts"] = fake
    sys.modules["ts.context"] = types.ModuleType("ts.context")
    install_ts_compat()
    assert importlib.import_module("ts.context").Context is Context
    assert sys.modules["ts"] is not fake


STREAMING = """
    from ts.handler_utils.utils import send_intermediate_predict_response
    from ts.protocol import otf_message_handler

    def handle(data, context):
        if data is None:
            return None
        for i in range(3):
            send_intermediate_predict_response(
                [f"part{i}" for _ in data], context.request_ids, "Intermediate", 200, context
            )
        otf_message_handler.send_intermediate_predict_response(
            ["old"] * len(data), context.request_ids, "Intermediate", 200, context
        )
        return ["done" for _ in data]
"""


def test_streaming_intermediate_responses(model_dir: Path) -> None:
    write_handler(model_dir, STREAMING)
    harness = load_service(write_spec(model_dir, "handler"))
    first, second = make_request(b"a"), make_request(b"b")
    with pytest.warns(DeprecationWarning):
        finals = harness.predict(first, second)
    chunks = [r for r in harness.intermediates if r.request_id == first.request_id]
    assert [c.body for c in chunks] == [b"part0", b"part1", b"part2", b"old"]
    assert all(not c.final and ("ts_stream_next", "true") in c.headers for c in chunks)
    assert len(harness.intermediates) == 8
    assert [f.body for f in finals] == [b"done", b"done"]
    assert all(f.final and ("ts_stream_next", "false") in f.headers for f in finals)


METRICS = """
    from ts.metrics.dimension import Dimension
    from ts.metrics.metric_type_enum import MetricTypes

    def handle(data, context):
        if data is None:
            return None
        m = context.metrics
        cached = m.add_metric_to_cache("LoopCount", "count", ["Stage"], MetricTypes.GAUGE)
        cached.add_or_update(3, ["pre"], context.get_request_id(0))
        m.add_counter("Hits", 1, idx=0, dimensions=[Dimension("Kind", "a")])
        m.add_time("Decode", 1.5, unit="s")
        m.add_size("Payload", 2, unit="kB")
        m.add_percent("Util", 50.0)
        m.get_metric("LoopCount", MetricTypes.GAUGE).update(4, dimensions=[Dimension("Stage", "x")])
        if data[0]["body"] == b"bad-unit":
            m.add_time("Decode", 1, unit="minutes")
        return ["ok" for _ in data]
"""


def test_custom_metrics(model_dir: Path) -> None:
    write_handler(model_dir, METRICS)
    harness = load_service(write_spec(model_dir, "handler", model_name="mm"))
    request = make_request(b"x")
    (response,) = harness.predict(request)
    assert response.status == 200
    (loop, loop2) = harness.metric("LoopCount")
    assert (loop.value, loop.unit, loop.metric_type) == (3.0, "Count", "gauge")
    # Declared dimensions are kept exactly, as in TorchServe (no defaults appended).
    assert loop.dimensions == (("Stage", "pre"),)
    assert loop.request_id == request.request_id
    assert loop2.value == 4.0 and loop2.dimensions[0] == ("Stage", "x")
    (hits,) = harness.metric("Hits")
    assert hits.metric_type == "counter" and hits.request_id == request.request_id
    assert hits.dimensions == (("Kind", "a"), ("ModelName", "mm"), ("Level", "Model"))
    assert harness.metric("Decode")[0].unit == "Seconds"
    assert harness.metric("Payload")[0].unit == "Kilobytes"
    assert harness.metric("Util")[0].unit == "Percent"
    # A unit add_time does not know is logged on torchwick.model and dropped (issue 11: a bad
    # handler metric never fails the request; TorchServe raises here).
    decodes = len(harness.metric("Decode"))
    (bad,) = harness.predict(make_request(b"bad-unit"))
    assert bad.status == 200
    assert [m.unit for m in harness.metric("Decode")[decodes:]] == ["Seconds"]


def test_context_response_state_api() -> None:
    context = Context("m", "/tmp", {}, 2, None)
    context.begin_batch(["a", "b"], [{"ts_request_sequence_id": "s"}, {}])
    context.set_all_response_status(202, "Accepted")
    context.set_response_status(201, "Created", idx=1)
    assert context.get_response_status(0) == (202, "Accepted")
    assert context.get_response_status(1) == (201, "Created")
    context.set_response_content_type(0, "application/x-npy")
    assert context.get_response_content_type(0) == "application/x-npy"
    assert context.get_sequence_id(0) == "s" and context.get_sequence_id(1) is None
    assert context.system_properties["server_name"] == "MMS"
    emitted: list[object] = []
    quiet = Context("m", "/tmp", {}, 1, None, emit_metric=emitted.append)
    # A dimension-count mismatch is logged and dropped, as TorchServe does.
    quiet.metrics.add_metric_to_cache("X", "ms", ["A"]).add_or_update(1, [])
    assert emitted == []
    with pytest.raises(TypeError):
        context.metrics.add_counter("X", "many")  # type: ignore[arg-type]


MNIST_STYLE = """
    import torch
    from ts.torch_handler.image_classifier import ImageClassifier
    from torchwick.handlers.builtin.vision import ImageTransform


    class Grayscale28:
        # Stands in for a torchvision Compose: any PIL image -> tensor callable.
        def __init__(self):
            self.inner = ImageTransform(resize=28, crop_size=28, mean=None, std=None)

        def __call__(self, image):
            return self.inner(image).mean(dim=0, keepdim=True).expand(3, -1, -1)


    class DigitClassifier(ImageClassifier):
        image_processing = Grayscale28()

        def postprocess(self, data):
            return data.argmax(1).tolist()
"""


def test_torchserve_subclass_of_a_default_handler(model_dir: Path) -> None:
    import torch

    from tests.support.images import image_bytes
    from tests.support.models import SmallCNN, save_eager

    torch.manual_seed(0)
    model_file, weights = save_eager(SmallCNN(), model_dir)
    write_handler(model_dir, MNIST_STYLE, name="mnist_handler.py")
    spec = write_spec(model_dir, "mnist_handler.py", serialized_file=weights, model_file=model_file)
    harness = load_service(spec)
    good, bad = harness.predict(make_request(image_bytes(30, 28)), make_request(b"nope"))
    assert good.status == 200 and int(good.body) in range(10)
    assert bad.status == 400


PROFILED = """
    from ts.handler_utils.timer import timed
    from ts.torch_handler.base_handler import BaseHandler


    class Profiled(BaseHandler):
        def initialize(self, context):
            self.initialized = True

        @timed
        def preprocess(self, data):
            return [row["body"] for row in data]

        def inference(self, data):
            return data

        def postprocess(self, data):
            return [bytes(d).decode() for d in data]
"""


@pytest.mark.parametrize("profile", [True, False])
def test_timed_decorator(model_dir: Path, profile: bool) -> None:
    write_handler(model_dir, PROFILED)
    harness = load_service(
        write_spec(model_dir, "handler", config={"handler": {"profile": profile}})
    )
    assert importlib.import_module("ts").__version__ == "0.12.0"
    (response,) = harness.predict(make_request(b"hey"))
    assert response.body == b"hey"
    assert len(harness.metric("ts_handler_preprocess")) == (1 if profile else 0)
