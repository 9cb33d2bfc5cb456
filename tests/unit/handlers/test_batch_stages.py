"""A batch in two stages (``prepare_batch`` then ``complete_batch``) answers as ``predict``.

Real ``ModelService``s over real model directories (``image_classifier`` with a small CNN
and random weights); the pinned-buffer pool and the serving options on their own.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from tests.support.images import image_bytes
from tests.support.models import SmallCNN, model_dir_for, write_labels
from tests.unit.handlers.helpers import Harness, load_service, make_request, write_handler
from torchwick.handlers.builtin.image_classifier import ImageClassifier
from torchwick.handlers.messages import PredictRequest
from torchwick.handlers.runtimes.feeder import DeviceFeeder, Prefetched
from torchwick.handlers.runtimes.pinned import PinnedBufferPool
from torchwick.handlers.serving_options import ServingOptions, memory_fraction, serving_options
from torchwick.handlers.staged import stageable
from torchwick.server.workers.devices import workers_sharing_gpu


def _classifier(model_dir: Path, **handler: object) -> Harness:
    torch.manual_seed(0)
    config = {"handler": {"resize": 40, "crop_size": 32, "topk": 3, **handler}}
    spec = model_dir_for("eager", SmallCNN(), model_dir, "image_classifier", config=config)
    write_labels(model_dir, [f"class{i}" for i in range(10)])
    return load_service(spec)


def _batch() -> list[PredictRequest]:
    return [
        make_request(image_bytes(48, 40, "JPEG", seed=1), "image/jpeg"),
        make_request(b"not an image", "image/png"),
        make_request(image_bytes(64, 50, "PNG", seed=2), "image/png"),
        make_request(image_bytes(40, 40, "JPEG", seed=3), "image/jpeg"),
    ]


def _answers(responses: list) -> list[tuple[str, int, bytes]]:  # type: ignore[type-arg]
    return [(r.request_id, r.status, r.body) for r in responses]


@pytest.mark.parametrize("threads", [0, 2])
def test_two_stages_answer_exactly_as_predict(model_dir: Path, threads: int) -> None:
    harness = _classifier(model_dir, preprocess_threads=threads)
    service = harness.service
    batch = _batch()
    whole = service.predict(batch)
    prepared = service.prepare_batch(batch)
    assert prepared.staged is not None and not prepared.exclusive
    staged = service.complete_batch(prepared)
    assert _answers(staged) == _answers(whole)
    assert [r.status for r in staged] == [200, 400, 200, 200]
    assert service.last_timings.preprocess >= 0 and service.last_timings.inference >= 0


def test_the_next_batch_can_be_prepared_before_the_current_one_completes(
    model_dir: Path,
) -> None:
    service = _classifier(model_dir).service
    first, second = _batch(), list(reversed(_batch()))
    expected = [_answers(service.predict(first)), _answers(service.predict(second))]
    # The pipeline's order: prepare N+1 while N is prepared but not completed.
    prepared_first = service.prepare_batch(first)
    prepared_second = service.prepare_batch(second)
    got = [
        _answers(service.complete_batch(prepared_first)),
        _answers(service.complete_batch(prepared_second)),
    ]
    assert got == expected


def test_explain_batches_run_whole_and_exclusively(model_dir: Path) -> None:
    service = _classifier(model_dir).service
    request = make_request(
        image_bytes(40, 40, "PNG", seed=4), "image/png", headers=[("explain", "True")]
    )
    prepared = service.prepare_batch([request])
    assert prepared.staged is None and prepared.exclusive
    assert _answers(service.complete_batch(prepared))[0][1] == 200


FRAGILE_HANDLER = """
from torchwick.handlers.builtin.image_classifier import ImageClassifier


class Fragile(ImageClassifier):
    pipeline_safe = True

    def preprocess(self, data):
        if any(row.get("body") == b"crash" for row in data):
            raise RuntimeError("preprocess crashed")
        return super().preprocess(data)
"""


def test_a_failing_first_stage_is_answered_like_a_failing_handle(model_dir: Path) -> None:
    torch.manual_seed(0)
    config = {"handler": {"resize": 40, "crop_size": 32}}
    spec = model_dir_for("eager", SmallCNN(), model_dir, "handler.py", config=config)
    write_handler(model_dir, FRAGILE_HANDLER)
    service = load_service(spec).service
    batch = [make_request(b"crash", "image/png"), make_request(b"junk", "image/png")]
    whole = service.predict(batch)
    prepared = service.prepare_batch(batch)
    assert prepared.error is not None
    assert _answers(service.complete_batch(prepared)) == _answers(whole)
    assert [r.status for r in whole] == [500, 500]
    # The next batch is unaffected.
    good = [make_request(image_bytes(40, 40, "PNG", seed=5), "image/png")]
    assert [r.status for r in service.complete_batch(service.prepare_batch(good))] == [200]


def test_only_handlers_that_declare_every_step_safe_are_staged() -> None:
    class OwnPostprocess(ImageClassifier):
        def postprocess(self, data: object) -> list[object]:
            return super().postprocess(data)

    class DeclaredSafe(OwnPostprocess):
        pipeline_safe = True

        def postprocess(self, data: object) -> list[object]:
            return super().postprocess(data)

    class AsyncStep(ImageClassifier):
        pipeline_safe = True

        async def inference(self, data: object, *args: object, **kwargs: object) -> object:
            return super().inference(data)

    assert stageable(ImageClassifier())
    assert not stageable(OwnPostprocess())
    assert stageable(DeclaredSafe())
    assert not stageable(AsyncStep())
    assert not stageable(object())


# The staging buffers ---------------------------------------------------------------------


class GatedFence:
    """A fence the test passes by hand; ``synchronize`` passes it (the copy 'finishes')."""

    def __init__(self) -> None:
        self.passed = threading.Event()
        self.waited = False

    def query(self) -> bool:
        return self.passed.is_set()

    def synchronize(self) -> None:
        self.waited = True
        self.passed.set()


def test_a_buffer_is_reused_only_after_its_fence_passed() -> None:
    pool = PinnedBufferPool(pin=False, max_buffers=3)
    data = torch.arange(12, dtype=torch.float32).view(3, 4)
    view, buffer = pool.stage(data)
    assert torch.equal(view, data) and view.data_ptr() == buffer.data_ptr()
    fence = GatedFence()
    pool.release(buffer, fence)
    # Still being read: a second batch gets a second buffer.
    _, other = pool.stage(data)
    assert other.data_ptr() != buffer.data_ptr() and pool.allocations == 2
    pool.release(other, GatedFence())
    fence.passed.set()
    view3, third = pool.stage(data * 2)
    assert third.data_ptr() == buffer.data_ptr() and pool.allocations == 2
    assert torch.equal(view3, data * 2)


def test_a_smaller_batch_reuses_a_larger_buffer_and_dtypes_stay_apart() -> None:
    pool = PinnedBufferPool(pin=False, max_buffers=4)
    _, big = pool.stage(torch.zeros(8, 3))
    pool.release(big, _passed())
    view, reused = pool.stage(torch.ones(2, 3))
    assert reused.data_ptr() == big.data_ptr() and view.shape == (2, 3)
    pool.release(reused, _passed())
    _, ints = pool.stage(torch.zeros(2, 3, dtype=torch.int64))
    assert ints.dtype == torch.int64 and pool.allocations == 2


def test_a_full_pool_waits_for_the_oldest_copy() -> None:
    pool = PinnedBufferPool(pin=False, max_buffers=2)
    fences = [GatedFence(), GatedFence()]
    buffers = []
    for fence in fences:
        _, buffer = pool.stage(torch.zeros(4))
        pool.release(buffer, fence)
        buffers.append(buffer)
    _, again = pool.stage(torch.zeros(4))
    assert fences[0].waited and not fences[1].waited
    assert again.data_ptr() == buffers[0].data_ptr() and pool.allocations == 2
    assert pool.buffer_count == 1  # the other one still waits for its fence


def test_a_full_pool_replaces_a_free_buffer_that_is_too_small() -> None:
    pool = PinnedBufferPool(pin=False, max_buffers=1)
    _, small = pool.stage(torch.zeros(2))
    pool.release(small, _passed())
    _, large = pool.stage(torch.zeros(16))
    assert large.numel() == 16 and pool.allocations == 2 and pool.buffer_count == 0


def _passed() -> GatedFence:
    fence = GatedFence()
    fence.passed.set()
    return fence


def test_on_cpu_the_feeder_copies_nothing() -> None:
    feeder = DeviceFeeder(torch.device("cpu"))
    tensor = torch.ones(2, 3)
    assert feeder.pool is None
    assert feeder.to_device(tensor) is tensor
    prefetched = feeder.prefetch(tensor)
    assert prefetched == Prefetched(tensor) and feeder.ready(prefetched) is tensor


# Options -----------------------------------------------------------------------------------


def test_serving_options_defaults_and_values() -> None:
    assert serving_options({}) == ServingOptions()
    assert serving_options({"handler": "not a map"}) == ServingOptions()
    parsed = serving_options(
        {
            "handler": {
                "pipeline_depth": 2,
                "preprocess_threads": 4,
                "pin_memory": False,
                "cuda_graphs": True,
                "gpu_memory_fraction": 0.5,
            }
        }
    )
    assert parsed == ServingOptions(2, 4, False, True, 0.5)
    assert serving_options({"handler": {"gpu_memory_fraction": "auto"}}).gpu_memory_fraction == (
        "auto"
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("pipeline_depth", 0),
        ("pipeline_depth", 5),
        ("pipeline_depth", "2"),
        ("pipeline_depth", True),
        ("preprocess_threads", -1),
        ("pin_memory", "yes"),
        ("cuda_graphs", 1),
        ("gpu_memory_fraction", 0),
        ("gpu_memory_fraction", 1.5),
        ("gpu_memory_fraction", "half"),
    ],
)
def test_bad_serving_options_name_their_key(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"handler.{key}"):
        serving_options({"handler": {key: value}})


def test_memory_fraction_arithmetic() -> None:
    assert memory_fraction(None, 4) is None
    assert memory_fraction(0.3, 4) == 0.3
    assert memory_fraction("auto", 4) == pytest.approx(0.95 / 4)
    assert memory_fraction("auto", 0) == pytest.approx(0.95)
    # Four workers of one model on one GPU: each capped at a quarter from the first one on.
    assert workers_sharing_gpu(on_gpu=1, planned_workers=4, allowed_gpus=1) == 4
    # Spread over two GPUs: two per GPU; more already placed there wins.
    assert workers_sharing_gpu(on_gpu=1, planned_workers=4, allowed_gpus=2) == 2
    assert workers_sharing_gpu(on_gpu=3, planned_workers=4, allowed_gpus=2) == 3
    assert workers_sharing_gpu(on_gpu=0, planned_workers=0, allowed_gpus=0) == 1
