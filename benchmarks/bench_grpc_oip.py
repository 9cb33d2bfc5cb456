"""Load clients for the protocol benchmark: TorchServe-proto gRPC ``Predictions`` and OIP REST.

- :func:`run_grpc_load` is the gRPC twin of ``bench_client.run_load``: ``concurrency`` calls in
  flight at all times on ``grpc.aio`` channels (a closed loop: each finished call starts the
  next at once), with the same point structure: warm-up (discarded; it lasts at least until
  every caller has had one answer), a measured window, and a drain in which every caller
  finishes its call in flight. Only calls that complete inside the window count; ``OK`` calls
  give throughput and latency, other status codes are counted by code number (``statuses``),
  ``DEADLINE_EXCEEDED`` as timeouts and ``UNAVAILABLE`` as connection errors.
- :func:`oip_binary_request` and :func:`oip_json_request` pre-build one Open Inference Protocol
  ``/v2/models/{m}/infer`` HTTP/1.1 request (binary tensor data extension, or the JSON tensor
  format) that ``bench_client.run_load`` sends as is.

The stubs are torchwick's generated ones (``torchwick.server.grpc._generated``), made from the
same ``inference.proto`` TorchServe 0.12 serves, so one client drives both servers. gRPC runs on
asyncio's own loop: ``grpc.aio`` does not support uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
import numpy as np
import numpy.typing as npt
from bench_client import LoadResult
from google.protobuf import empty_pb2

from torchwick.server.grpc._generated import inference_pb2, inference_pb2_grpc

if TYPE_CHECKING:
    from torchwick.server.grpc._generated.inference_pb2_grpc import (
        InferenceAPIsServiceAsyncStub,
    )

PredictionsRequest = inference_pb2.PredictionsRequest

#: Message limits of the client's channels: a ResNet input (602,112 bytes) fits either way.
_MESSAGE_LIMIT = 64 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_send_message_length", _MESSAGE_LIMIT),
    ("grpc.max_receive_message_length", _MESSAGE_LIMIT),
]


def predictions_request(model: str, body: bytes) -> PredictionsRequest:
    """A ``PredictionsRequest`` for the default version: ``input["data"] = body``."""
    return PredictionsRequest(model_name=model, input={"data": body})


async def grpc_ready(target: str, timeout_s: float) -> None:
    """Wait until a ``Ping`` on ``target`` answers (the gRPC server starts after REST's)."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(target, options=_OPTIONS) as channel:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
        while True:
            try:
                await stub.Ping(empty_pb2.Empty(), timeout=2)
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def grpc_predict_once(
    target: str, request: PredictionsRequest, timeout_s: float = 30.0
) -> bytes:
    """One ``Predictions`` call (probes); raises ``grpc.aio.AioRpcError`` on a failure."""
    async with grpc.aio.insecure_channel(target, options=_OPTIONS) as channel:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
        response = await stub.Predictions(request, timeout=timeout_s)
        prediction: bytes = response.prediction
        return prediction


class _GrpcPoint:
    """State shared by the callers of one point (one event loop: no locks)."""

    def __init__(self, concurrency: int, max_requests: int) -> None:
        self.measuring = False
        self.stopping = False
        self.max_requests = max_requests
        self.latencies_ns: list[int] = []
        self.statuses: Counter[int] = Counter()
        self.connection_errors = 0
        self.timeouts = 0
        self.total_responses = 0
        self.enough = asyncio.Event()
        self.unanswered = concurrency
        self.all_answered = asyncio.Event()


async def _caller(
    point: _GrpcPoint,
    stub: InferenceAPIsServiceAsyncStub,
    request: PredictionsRequest,
    timeout_s: float,
) -> None:
    answered = False
    while not point.stopping:
        start = time.perf_counter_ns()
        try:
            await stub.Predictions(request, timeout=timeout_s)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            code = error.code()
        end = time.perf_counter_ns()
        point.total_responses += 1
        if not answered:
            answered = True
            point.unanswered -= 1
            if not point.unanswered:
                point.all_answered.set()
        if point.measuring:
            if code == grpc.StatusCode.OK:
                point.latencies_ns.append(end - start)
                if len(point.latencies_ns) >= point.max_requests:
                    point.enough.set()
            elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
                point.timeouts += 1
            elif code == grpc.StatusCode.UNAVAILABLE:
                point.connection_errors += 1
            else:
                point.statuses[int(code.value[0])] += 1
        if code == grpc.StatusCode.UNAVAILABLE:
            await asyncio.sleep(0.01)


async def run_grpc_load(
    target: str,
    request: PredictionsRequest,
    *,
    concurrency: int,
    warmup_s: float,
    seconds: float,
    channels: int = 1,
    max_requests: int = 5_000_000,
    request_timeout_s: float = 30.0,
    on_window_start: Callable[[], None] | None = None,
    on_window_end: Callable[[], None] | None = None,
) -> LoadResult:
    """One gRPC point: ``concurrency`` closed-loop callers over ``channels`` channels.

    Callers share the channels round-robin (HTTP/2 multiplexes their calls). Returns the same
    ``LoadResult`` as the HTTP client; ``statuses`` holds gRPC status code numbers.
    """
    opened = [grpc.aio.insecure_channel(target, options=_OPTIONS) for _ in range(channels)]
    try:
        await asyncio.gather(*(channel.channel_ready() for channel in opened))
        stubs = [inference_pb2_grpc.InferenceAPIsServiceStub(channel) for channel in opened]
        point = _GrpcPoint(concurrency, max_requests)
        tasks = [
            asyncio.create_task(_caller(point, stubs[i % channels], request, request_timeout_s))
            for i in range(concurrency)
        ]
        window = 0.0
        try:
            await asyncio.sleep(warmup_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(point.all_answered.wait(), request_timeout_s)
            if on_window_start is not None:
                on_window_start()
            point.measuring = True
            window_start = time.perf_counter()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(point.enough.wait(), seconds)
            point.measuring = False
            window = time.perf_counter() - window_start
            if on_window_end is not None:
                on_window_end()
            point.stopping = True
            # Drain: every caller finishes its call in flight (bounded by the call deadline).
            await asyncio.wait(tasks, timeout=request_timeout_s + 1.0)
        finally:
            point.stopping = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await asyncio.gather(*(channel.close() for channel in opened))
    latencies = sorted(ns / 1e6 for ns in point.latencies_ns)
    return LoadResult(
        concurrency=concurrency,
        window_s=window,
        ok=len(latencies),
        statuses=dict(point.statuses),
        connection_errors=point.connection_errors,
        timeouts=point.timeouts,
        latencies_ms=latencies,
        total_responses=point.total_responses,
    )


# --- Open Inference Protocol requests ---------------------------------------------------------


def _http_request(host: str, port: int, path: str, headers: list[str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", *headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def oip_binary_request(
    host: str, port: int, model: str, name: str, array: npt.NDArray[np.float32]
) -> bytes:
    """``POST /v2/models/{model}/infer`` with ``array`` as FP32 binary tensor data.

    The JSON header names the input and its ``binary_data_size``; its length goes in
    ``Inference-Header-Content-Length``; the raw little-endian bytes follow it. The answer is
    asked for as JSON (no ``binary_data_output``): the outputs here are a few numbers.
    """
    raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        },
        separators=(",", ":"),
    ).encode()
    headers = [
        "Content-Type: application/octet-stream",
        f"Inference-Header-Content-Length: {len(header)}",
    ]
    return _http_request(host, port, f"/v2/models/{model}/infer", headers, header + raw)


def oip_json_request(
    host: str, port: int, model: str, name: str, array: npt.NDArray[np.float32]
) -> bytes:
    """``POST /v2/models/{model}/infer`` with ``array`` in the JSON tensor format (flat data).

    Numbers are written with 7 significant digits (what float32 holds), as a client that
    formats its floats compactly would send them.
    """
    data = ",".join(f"{value:.7g}" for value in array.reshape(-1).tolist())
    shape = ",".join(str(d) for d in array.shape)
    body = (
        f'{{"inputs":[{{"name":"{name}","shape":[{shape}],"datatype":"FP32","data":[{data}]}}]}}'
    ).encode()
    headers = ["Content-Type: application/json"]
    return _http_request(host, port, f"/v2/models/{model}/infer", headers, body)


def raw_request(host: str, port: int, path: str, body: bytes) -> bytes:
    """``POST path`` with ``body`` as ``application/octet-stream`` (raw float32 bytes)."""
    return _http_request(host, port, path, ["Content-Type: application/octet-stream"], body)
