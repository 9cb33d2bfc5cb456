"""Phase histograms: bucket placement, exposition, forgetting; the worker's answer timings."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from torchwick.handlers.messages import BatchTimings, PredictResponse
from torchwick.server.observability import render_text
from torchwick.server.observability.metrics import FrontendMetrics
from torchwick.server.observability.phases import PhaseHistograms
from torchwick.server.workers import ipc
from torchwick.server.workers.ipc import Kind


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = render_text(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _bucket(name: str, le: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"model_name": "m", "model_version": "1", "variant": "", "le": le}
    return (f"{name}_bucket", tuple(sorted(labels.items())))


def test_values_land_in_inclusive_cumulative_buckets() -> None:
    registry = CollectorRegistry()
    phases = PhaseHistograms(registry, (0.001, 0.01, 0.1))
    series = phases.series("m", "1")
    for value in (0.0005, 0.001, 0.005, 0.5):
        series.request(value)
    samples = _samples(registry)
    name = "torchwick_request_latency_seconds"
    assert samples[_bucket(name, "0.001")] == 2  # le is inclusive: 0.001 counts here
    assert samples[_bucket(name, "0.01")] == 3
    assert samples[_bucket(name, "0.1")] == 3
    assert samples[_bucket(name, "+Inf")] == 4
    labels = (("model_name", "m"), ("model_version", "1"), ("variant", ""))
    assert samples[(f"{name}_count", labels)] == 4
    assert abs(samples[(f"{name}_sum", labels)] - 0.5065) < 1e-9


def test_batches_and_worker_timings_feed_their_families() -> None:
    registry = CollectorRegistry()
    series = PhaseHistograms(registry).series("m", "1")
    series.batch_formed(3, 4, 0.002)
    series.worker_timings(BatchTimings(0.001, 0.002, -1.0, 0.0001, 0.004), round_trip_s=0.005)
    samples = _samples(registry)
    labels = (("model_name", "m"), ("model_version", "1"), ("variant", ""))
    assert samples[("torchwick_batch_size_sum", labels)] == 3
    assert samples[("torchwick_batch_fill_ratio_sum", labels)] == 0.75
    assert abs(samples[("torchwick_worker_transfer_seconds_sum", labels)] - 0.001) < 1e-9
    assert samples[("torchwick_handler_inference_seconds_count", labels)] == 1
    # Not measured by the worker (-1): no sample added.
    assert samples[("torchwick_handler_postprocess_seconds_count", labels)] == 0


def test_forgetting_a_model_drops_its_series_and_modes_gate_the_families() -> None:
    metrics = FrontendMetrics("h")
    assert metrics.phases is not None
    metrics.phases.series("m", "1").request(0.1)
    assert "torchwick_request_latency_seconds_count" in render_text(metrics.registry).decode()
    metrics.forget_model("m")
    assert 'model_name="m"' not in render_text(metrics.registry).decode()
    legacy = FrontendMetrics("h", mode="legacy")
    text = render_text(legacy.registry).decode()
    assert legacy.phases is None
    assert "Requests2XX" not in text and "ts_inference_requests_total" in text
    assert render_text(FrontendMetrics("h", mode="log").registry) == b""


def test_answer_frames_carry_timings_and_older_frames_still_decode() -> None:
    responses = [PredictResponse("r1", body=b"ok")]
    timings = BatchTimings(0.1, 0.2, 0.3, 0.4, 1.5)
    frame = b"".join(
        bytes(b) for b in ipc.encode_responses(Kind.PREDICT_RESULT, 7, responses, timings)
    )
    old = b"".join(bytes(b) for b in ipc.encode_responses(Kind.PREDICT_RESULT, 7, responses))
    for data, expected in ((frame, timings), (old, None)):
        _, header_len, _ = ipc.parse_prefix(data[: ipc.PREFIX_SIZE])
        header = data[ipc.PREFIX_SIZE : ipc.PREFIX_SIZE + header_len]
        payload = data[ipc.PREFIX_SIZE + header_len :]
        assert ipc.decode_answer(header, payload) == (7, responses, expected)
        assert ipc.decode_responses(header, payload) == (7, responses)
