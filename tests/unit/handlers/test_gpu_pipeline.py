"""The CUDA-only parts of the GPU pipeline; every test here needs a CUDA device.

Pinned staging and non-blocking copies (``DeviceFeeder``), the copy stream of the pipelined
path, CUDA graph replay, the per-process memory cap, and a staged ``image_classifier`` on the
GPU answering like the same model on the CPU. Skipped, with the reason, where
``torch.cuda.is_available()`` is false (CI, the development machines); run them on a GPU
machine with ``scripts/gpu_check.sh``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.support.images import image_bytes
from tests.support.models import SmallCNN, model_dir_for, write_labels
from tests.unit.handlers.helpers import load_service, make_request
from torchwick.handlers.runtimes.cuda_graphs import GraphedModule
from torchwick.handlers.runtimes.feeder import DeviceFeeder, Prefetched

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA device (torch.cuda.is_available() is False); "
        "run scripts/gpu_check.sh on a GPU machine",
    ),
]

CUDA = torch.device("cuda:0")


def test_batches_are_staged_in_reused_pinned_buffers() -> None:
    feeder = DeviceFeeder(CUDA, buffers=2)
    assert feeder.pool is not None
    batches = [torch.rand(4, 3, 32, 32) for _ in range(6)]
    moved = [feeder.to_device(b) for b in batches]
    torch.cuda.synchronize()
    for host, device in zip(batches, moved, strict=True):
        assert device.device.type == "cuda" and torch.equal(device.cpu(), host)
    # Six batches through at most two page-locked buffers, reused once their copies were done.
    assert feeder.pool.allocations <= 2
    _view, buffer = feeder.pool.stage(batches[0])
    assert buffer.is_pinned()


def test_an_unpinned_feeder_still_copies_correctly() -> None:
    feeder = DeviceFeeder(CUDA, pin_memory=False)
    host = torch.rand(2, 5)
    assert feeder.pool is None
    assert torch.equal(feeder.to_device(host).cpu(), host)


def test_prefetch_on_the_copy_stream_is_ready_on_the_compute_stream() -> None:
    feeder = DeviceFeeder(CUDA)
    host = torch.rand(8, 3, 64, 64)
    box: list[Prefetched] = []
    # Issued from another thread, as the pipeline's preprocessing thread does.
    thread = threading.Thread(target=lambda: box.append(feeder.prefetch(host)))
    thread.start()
    thread.join(30)
    prefetched = box[0]
    assert prefetched.event is not None
    tensor = feeder.ready(prefetched)
    doubled = tensor * 2  # queued on the compute stream after the wait
    assert torch.equal(doubled.cpu(), host * 2)


def test_cuda_graph_replay_matches_eager_per_shape() -> None:
    torch.manual_seed(0)
    model = SmallCNN().to(CUDA).eval()
    graphed = GraphedModule(model, CUDA)
    with torch.inference_mode():
        for shape in ((4, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32)):
            x = torch.rand(shape, device=CUDA)
            torch.testing.assert_close(graphed(x), model(x))
        assert graphed.captured == 2
        first = graphed(torch.rand(4, 3, 32, 32, device=CUDA))
        kept = first.clone()
        graphed(torch.rand(4, 3, 32, 32, device=CUDA))
        # Answers are copies: the next replay does not overwrite an earlier answer.
        assert torch.equal(first, kept)


def test_the_memory_fraction_caps_this_process_allocator() -> None:
    script = (
        "import torch\n"
        "from torchwick.handlers.runtimes.feeder import apply_memory_fraction\n"
        "assert apply_memory_fraction(0, 0.01)\n"
        "total = torch.cuda.get_device_properties(0).total_memory\n"
        "try:\n"
        "    torch.empty(int(total * 0.05), dtype=torch.uint8, device='cuda:0')\n"
        "except torch.cuda.OutOfMemoryError:\n"
        "    print('capped')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "capped"


def test_a_staged_classifier_on_the_gpu_answers_like_the_cpu(tmp_path: Path) -> None:
    answers = []
    for gpu_id in (None, 0):
        model_dir = tmp_path / f"m{gpu_id}"
        torch.manual_seed(0)
        config = {"handler": {"resize": 40, "crop_size": 32, "pipeline_depth": 2}}
        spec = model_dir_for("eager", SmallCNN(), model_dir, "image_classifier", config=config)
        spec = replace(spec, gpu_id=gpu_id)
        write_labels(model_dir, [f"class{i}" for i in range(10)])
        service = load_service(spec).service
        batch = [
            make_request(image_bytes(48, 40, "JPEG", seed=seed), "image/jpeg") for seed in range(4)
        ]
        prepared = service.prepare_batch(batch)
        assert prepared.staged is not None
        if gpu_id is not None:
            assert isinstance(prepared.staged.pre, Prefetched)
        answers.append(service.complete_batch(prepared))
    cpu, gpu = answers
    assert [r.status for r in gpu] == [200] * 4
    for c, g in zip(cpu, gpu, strict=True):
        want, got = json.loads(c.body), json.loads(g.body)
        assert list(got) == list(want)
        assert list(got.values()) == pytest.approx(list(want.values()), abs=1e-4)
