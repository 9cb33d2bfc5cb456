"""ModelService: loading entry points, request decoding, response encoding, failure mapping."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import torch

from tests.support.models import write_spec
from tests.unit.handlers.helpers import body_json, load_service, make_request, write_handler
from torchwick.handlers.messages import InputParameter, PredictRequest
from torchwick.handlers.service import HandlerLoadError

ECHO = """
    import json
    CALLS = []

    def handle(data, context):
        CALLS.append(data)
        if data is None:
            return None
        return [json.dumps({k: type(v).__name__ for k, v in row.items()}) for row in data]
"""


def test_module_level_handle_is_initialised_with_none(model_dir: Path) -> None:
    write_handler(model_dir, ECHO)
    harness = load_service(write_spec(model_dir, "handler"))
    module = __import__("sys").modules[harness.service.entry.handle.__module__]
    assert module.CALLS == [None]
    (response,) = harness.predict(make_request(b"\x00\x01"))
    assert response.status == 200 and response.final
    assert json.loads(response.body) == {"body": "bytearray"}


def test_input_decoding_follows_content_type(model_dir: Path) -> None:
    write_handler(model_dir, ECHO)
    harness = load_service(write_spec(model_dir, "handler.py"))
    responses = harness.predict(
        make_request({"a": 1}),
        make_request("hello"),
        make_request(b"{not json", "application/json"),
        make_request(b"\xff\xfe", "text/plain"),
        make_request(b"raw", None, name="data"),
    )
    kinds = [json.loads(r.body) for r in responses]
    assert kinds == [
        {"body": "dict"},
        {"body": "str"},
        {"body": "bytearray"},
        {"body": "bytearray"},
        {"data": "bytearray"},
    ]


def test_decode_input_request_off_keeps_bytes(model_dir: Path) -> None:
    write_handler(model_dir, ECHO)
    spec = write_spec(model_dir, "handler")
    from dataclasses import replace

    harness = load_service(replace(spec, decode_input_request=False))
    (response,) = harness.predict(make_request({"a": 1}))
    assert json.loads(response.body) == {"body": "bytearray"}


def test_file_colon_function_entry_point(model_dir: Path) -> None:
    write_handler(
        model_dir,
        """
        STATE = {}

        def entry(data, context):
            if data is None:
                STATE["model_dir"] = context.system_properties["model_dir"]
                return None
            return [STATE["model_dir"] for _ in data]
        """,
        name="custom.py",
    )
    harness = load_service(write_spec(model_dir, "custom.py:entry"))
    responses = harness.predict(make_request(b"x"), make_request(b"y"))
    assert [r.body.decode() for r in responses] == [str(model_dir)] * 2


TS_STYLE = """
    from ts.torch_handler.base_handler import BaseHandler
    from ts.utils.util import PredictionException
    from ts.context import Context


    class EchoHandler(BaseHandler):
        def initialize(self, context):
            assert isinstance(context, Context)
            props = context.system_properties
            self.tag = f"{props['server_version']}/{props['batch_size']}/{props['gpu_id']}"
            self.initialized = True

        def handle(self, data, context):
            out = []
            for idx, row in enumerate(data):
                text = (row.get("data") or row.get("body")).decode()
                if text == "boom":
                    raise PredictionException("boom requested", 418)
                if text == "teapot":
                    context.set_response_status(418, "I'm a teapot", idx)
                context.set_response_header(idx, "X-Tag", self.tag)
                context.set_response_content_type(idx, "text/plain")
                out.append(text.upper())
            return out
"""


def test_torchserve_style_class_handler(model_dir: Path) -> None:
    write_handler(model_dir, TS_STYLE)
    harness = load_service(write_spec(model_dir, "handler", batch_size=2))
    ok, teapot = harness.predict(make_request(b"hi"), make_request(b"teapot"))
    assert ok.status == 200 and ok.body == b"HI" and ok.content_type == "text/plain"
    assert ("x-tag", "0.12.0/2/None") in ok.headers
    assert (teapot.status, teapot.reason, teapot.body) == (418, "I'm a teapot", b"TEAPOT")
    # A batch-level PredictionException answers every request of the batch with its code.
    responses = harness.predict(make_request(b"x"), make_request(b"boom"))
    assert [r.status for r in responses] == [418, 418]
    assert body_json(responses[0]) == {
        "code": 418,
        "type": "InternalServerException",
        "message": "boom requested",
    }


FAILING = """
    import torch

    def handle(data, context):
        if data is None:
            return None
        kind = data[0]["body"].decode()
        if kind == "value":
            raise ValueError("bad things")
        if kind == "memory":
            raise MemoryError()
        if kind == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        if kind == "tuple":
            return ("a",)
        if kind == "short":
            return ["a"]
        if kind == "object":
            return [object(), "fine"]
        return ["ok" for _ in data]
"""


def test_handler_failures_become_statuses(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_handler(model_dir, FAILING)
    harness = load_service(write_spec(model_dir, "handler"))

    def run(kind: str, count: int = 2) -> list[tuple[int, str]]:
        responses = harness.predict(*[make_request(kind.encode()) for _ in range(count)])
        return [(r.status, body_json(r)["message"] if r.status != 200 else "") for r in responses]

    with caplog.at_level(logging.ERROR, logger="torchwick.model"):
        assert run("value") == [(500, "Prediction failed")] * 2
    assert "ValueError: bad things" in caplog.text  # the traceback went to the model log
    assert [s for s, _ in run("memory")] == [507, 507]
    assert [s for s, _ in run("cuda")] == [507, 507]
    statuses = run("tuple")
    assert statuses[0][0] == 500 and "Invalid model predict output" in statuses[0][1]
    statuses = run("short")
    assert statuses[0][0] == 500 and "number of batch response mismatched" in statuses[0][1]
    unsupported, fine = harness.predict(make_request(b"object"), make_request(b"x"))
    assert unsupported.status == 500
    assert "Unsupported model output data type" in body_json(unsupported)["message"]
    assert fine.status == 200 and fine.body == b"fine"
    # The loop survives: the next batch is served normally.
    assert [r.status for r in harness.predict(make_request(b"x"))] == [200]


def test_response_serialisation(model_dir: Path) -> None:
    write_handler(
        model_dir,
        """
        import torch

        def handle(data, context):
            if data is None:
                return None
            return [b"raw", "text", torch.arange(3), {"tabby": 0.5, "n": [1, 2]}, 0][: len(data)]
        """,
    )
    harness = load_service(write_spec(model_dir, "handler"))
    raw, text, tensor, mapping, zero = harness.predict(*[make_request(b"x") for _ in range(5)])
    assert raw.body == b"raw" and text.body == b"text"
    assert torch.equal(torch.load(io.BytesIO(tensor.body)), torch.arange(3))
    assert mapping.body.decode() == json.dumps({"tabby": 0.5, "n": [1, 2]}, indent=2)
    assert zero.body == b"0"
    assert all(r.content_type is None for r in (raw, text, tensor, mapping, zero))


def test_per_request_errors_returned_in_slots(model_dir: Path) -> None:
    write_handler(
        model_dir,
        """
        from torchwick.handlers.errors import InvalidInput

        def handle(data, context):
            if data is None:
                return None
            return [
                InvalidInput("empty request") if not row["body"] else row["body"].decode()
                for row in data
            ]
        """,
    )
    harness = load_service(write_spec(model_dir, "handler"))
    good, bad = harness.predict(make_request(b"a"), make_request(b""))
    assert good.status == 200 and good.body == b"a"
    assert bad.status == 400 and bad.content_type == "application/json"
    assert body_json(bad) == {"code": 400, "type": "BadInput", "message": "empty request"}


def test_request_headers_and_parameter_content_types(model_dir: Path) -> None:
    write_handler(
        model_dir,
        """
        def handle(data, context):
            if data is None:
                return None
            return [
                {
                    "id": context.get_request_id(i) == context.request_ids[i],
                    "auth": context.get_request_header(i, "x-custom"),
                    "part": context.get_request_header(i, "data"),
                    "seq": context.get_sequence_id(i),
                }
                for i in range(len(data))
            ]
        """,
    )
    harness = load_service(write_spec(model_dir, "handler"))
    request = PredictRequest(
        "r1",
        (("X-Custom", "yes"), ("ts_request_sequence_id", "seq-1")),
        (InputParameter("data", b"\x89PNG", "image/png"),),
    )
    (response,) = harness.predict(request)
    assert body_json(response) == {
        "id": True,
        "auth": "yes",
        "part": {"content-type": "image/png"},
        "seq": "seq-1",
    }


def test_describe_calls_describe_handle(model_dir: Path) -> None:
    write_handler(
        model_dir,
        """
        from ts.torch_handler.base_handler import BaseHandler

        class Described(BaseHandler):
            def initialize(self, context):
                self.initialized = True

            def describe_handle(self):
                return {"about": "me"}
        """,
    )
    harness = load_service(write_spec(model_dir, "handler"))
    response = harness.service.describe(PredictRequest("d1"))
    assert response.status == 200 and body_json(response) == {"about": "me"}


def test_prediction_time_metric(model_dir: Path) -> None:
    write_handler(model_dir, ECHO)
    harness = load_service(write_spec(model_dir, "handler", model_name="echo"))
    harness.predict(make_request(b"x"))
    (record,) = harness.metric("PredictionTime")
    assert record.unit == "Milliseconds" and record.metric_type == "gauge"
    assert record.dimensions == (("ModelName", "echo"), ("Level", "Model"))


@pytest.mark.parametrize(
    ("source", "handler", "status", "needle"),
    [
        (
            "class H:\n    def initialize(self, ctx):\n        raise RuntimeError('no gpu')\n"
            "    def handle(self, d, c):\n        return d\n",
            "handler",
            500,
            "RuntimeError: no gpu",
        ),
        (
            "class H:\n    def initialize(self, ctx):\n        raise MemoryError('full')\n"
            "    def handle(self, d, c):\n        return d\n",
            "handler",
            507,
            "MemoryError: full",
        ),
        ("import not_a_real_dependency_xyz\n", "handler", 500, "not_a_real_dependency_xyz"),
        ("x = 1\n", "handler", 500, "exactly one handler class"),
        ("def handle(d, c):\n    return d\n", "handler:nope", 500, "no function 'nope'"),
        ("", "no_such_handler_module", 500, "not found"),
        ("", "../outside.py", 500, "outside the model directory"),
    ],
)
def test_load_failures(
    model_dir: Path, source: str, handler: str, status: int, needle: str
) -> None:
    write_handler(model_dir, source)
    with pytest.raises(HandlerLoadError) as info:
        load_service(write_spec(model_dir, handler))
    assert info.value.status == status
    assert needle in info.value.message


def test_builtin_without_model_files_fails_clearly(model_dir: Path) -> None:
    with pytest.raises(HandlerLoadError) as info:
        load_service(write_spec(model_dir, "base_handler"))
    assert "No model weights could be loaded" in info.value.message


def test_local_file_shadows_builtin_name(model_dir: Path) -> None:
    # TorchServe imports the archive's module before its built-ins; so do we.
    write_handler(model_dir, ECHO, name="image_classifier.py")
    harness = load_service(write_spec(model_dir, "image_classifier"))
    (response,) = harness.predict(make_request(b"x"))
    assert json.loads(response.body) == {"body": "bytearray"}
