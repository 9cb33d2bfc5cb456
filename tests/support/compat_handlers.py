"""TorchServe-style handlers and models for the compatibility tests (unit and e2e).

``MnistNet`` takes ``[N, 1, 28, 28]`` like TorchServe's MNIST example. The handler sources
are written as TorchServe 0.12 users write them; torchvision cannot be imported beside the
CPU torch wheel here, so ``ToTensorNormalize`` stands in for
``transforms.Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])`` (same arithmetic: one
channel for a grayscale image, ``(x / 255 - 0.1307) / 0.3081``).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import nn


class MnistNet(nn.Module):
    """A small one-input-channel digit classifier (log-softmax over 10 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, 1)
        self.fc = nn.Linear(4 * 26 * 26, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = nn.functional.log_softmax(
            self.fc(torch.flatten(torch.relu(self.conv(x)), 1)), dim=1
        )
        return out


def gray_png(seed: int = 0, size: int = 28) -> bytes:
    """A ``size`` x ``size`` grayscale (mode ``L``) PNG of random pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format="PNG")
    return buffer.getvalue()


def gray_tensor(png: bytes) -> torch.Tensor:
    """What the MNIST transform makes of ``png``: ``[1, 28, 28]``."""
    array = np.asarray(Image.open(io.BytesIO(png)), dtype=np.float32) / 255.0
    return (torch.from_numpy(array).unsqueeze(0) - 0.1307) / 0.3081


TRANSFORM = '''
import numpy as np
import torch


class ToTensorNormalize:
    """torchvision's ToTensor + Normalize((0.1307,), (0.3081,)) for any PIL mode."""

    def __call__(self, image):
        array = np.asarray(image, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array)
        tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)
        return (tensor - 0.1307) / 0.3081
'''

#: TorchServe's examples/image_classifier/mnist/mnist_handler.py, transform aside.
MNIST_HANDLER = (
    TRANSFORM
    + """
from ts.torch_handler.image_classifier import ImageClassifier


class MNISTDigitClassifier(ImageClassifier):
    image_processing = ToTensorNormalize()

    def postprocess(self, data):
        return data.argmax(1).tolist()
"""
)

#: The mode and shape ``preprocess`` sees, answered per request.
MODE_HANDLER = (
    TRANSFORM
    + """
from PIL import Image
from ts.torch_handler.vision_handler import VisionHandler


class ModeProbe(VisionHandler):
    def image_processing(self, image):
        self.modes.append(image.mode)
        return ToTensorNormalize()(image)

    def preprocess(self, data):
        self.modes = []
        return super().preprocess(data)

    def inference(self, data, *args, **kwargs):
        return data

    def postprocess(self, data):
        return [{"mode": m, "shape": list(t.shape)} for m, t in zip(self.modes, data)]
"""
)

#: ``async def`` steps of a BaseHandler subclass and an awaited helper.
ASYNC_CLASS_HANDLER = """
import asyncio
from ts.torch_handler.base_handler import BaseHandler


class AsyncSteps(BaseHandler):
    def initialize(self, context):
        self.context = context
        self.initialized = True

    async def preprocess(self, data):
        await asyncio.sleep(0)
        return [self.request_payload(row) for row in data]

    async def inference(self, data, *args, **kwargs):
        await asyncio.sleep(0)
        return [{"echo": value, "loop": asyncio.get_running_loop() is not None} for value in data]

    async def postprocess(self, data):
        return data
"""

#: TorchServe 0.12's async worker contract: ``async def handle`` as the entry point.
ASYNC_FUNCTION_HANDLER = """
import asyncio

STATE = {}


async def handle(data, context):
    if data is None:
        STATE["ready"] = True
        return None
    results = await asyncio.gather(*(asyncio.sleep(0, result=row) for row in data))
    return [{"async": True, "ready": STATE["ready"], "n": len(results)} for _ in results]
"""

#: TorchServe's examples/custom_metrics/mnist_handler.py, transform aside.
CUSTOM_METRICS_HANDLER = (
    TRANSFORM
    + """
import time

from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.image_classifier import ImageClassifier


class MNISTDigitClassifier(ImageClassifier):
    image_processing = ToTensorNormalize()

    def initialize(self, context):
        super().initialize(context)
        metrics = context.metrics
        self.inf_request_count = metrics.add_metric_to_cache(
            metric_name="InferenceRequestCount", unit="count", dimension_names=[],
            metric_type=MetricTypes.COUNTER,
        )
        metrics.add_metric_to_cache(
            metric_name="PreprocessCallCount", unit="count", dimension_names=["ModelName"],
            metric_type=MetricTypes.COUNTER,
        )
        metrics.add_metric(
            name="InitializeCallCount", value=1, unit="count", metric_type=MetricTypes.COUNTER
        )

    def preprocess(self, data):
        start = time.time()
        metrics = self.context.metrics
        self.inf_request_count.add_or_update(value=1, dimension_values=[])
        metrics.get_metric(
            metric_name="PreprocessCallCount", metric_type=MetricTypes.COUNTER
        ).add_or_update(value=1, dimension_values=[self.context.model_name])
        metrics.get_metric(
            metric_name="RequestBatchSize", metric_type=MetricTypes.GAUGE
        ).add_or_update(value=len(data), dimension_values=[self.context.model_name])
        metrics.add_size(
            name="SizeOfImage", value=len(data[0].get("body")) / 1024, idx=None, unit="kB"
        )
        image = ImageClassifier.preprocess(self, data)
        metrics.add_time(
            name="HandlerMethodTime", value=(time.time() - start) * 1000, idx=None, unit="ms",
            dimensions=[Dimension(name="MethodName", value="preprocess")],
            metric_type=MetricTypes.GAUGE,
        )
        return image

    def postprocess(self, data):
        self.context.metrics.add_counter(
            name="PostprocessCallCount", value=1, idx=None, dimensions=[]
        )
        self.context.metrics.add_percent(
            name="ExamplePercentMetric", value=50, idx=None, dimensions=[],
            metric_type=MetricTypes.HISTOGRAM,
        )
        return data.argmax(1).flatten().tolist()
"""
)

#: The model_metrics part of TorchServe's examples/custom_metrics/metrics.yaml (with anchors).
METRICS_YAML = """
dimensions:
  - &model_name "ModelName"
  - &level "Level"
ts_metrics:
  counter:
    - name: Requests2XX
      unit: Count
      dimensions: [*level, "Hostname"]
model_metrics:
  counter:
    - name: InferenceRequestCount
      unit: count
      dimensions: []
    - name: InitializeCallCount
      unit: count
      dimensions: [*model_name, *level]
    - name: PreprocessCallCount
      unit: count
      dimensions: [*model_name]
    - name: PostprocessCallCount
      unit: CallCount
      dimensions: [*model_name, *level]
  gauge:
    - name: HandlerTime
      unit: ms
      dimensions: [*model_name, *level]
    - name: PredictionTime
      unit: ms
      dimensions: [*model_name, *level]
    - name: RequestBatchSize
      unit: count
      dimensions: ["ModelName"]
    - name: SizeOfImage
      unit: kB
      dimensions: [*model_name, *level]
"""
