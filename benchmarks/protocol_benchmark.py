"""Protocol benchmark: gRPC ``Predictions`` (torchwick vs TorchServe 0.12) and OIP REST (torchwick).

How to run (from the repository root, with torchwick's venv)::

    .venv/bin/python benchmarks/protocol_benchmark.py                # about 6 minutes
    .venv/bin/python benchmarks/protocol_benchmark.py --parts oip --seconds 2 --repeats 1

Two parts, each with its servers side by side on free 127.0.0.1 ports (gRPC ports too), token
auth off, servers and variants alternated (ABBA over ``--repeats``), every point warmed up,
measured and drained (``bench_client`` / ``bench_grpc_oip``):

- ``grpc``: the MLP (batch 8, ``--max-batch-delay`` ms, 1 worker) on torchwick and TorchServe,
  one body (its 64 floats as raw float32 bytes) sent as ``PredictionsRequest.input["data"]``
  over gRPC (``grpc.aio``, ``--grpc-channels`` channels) and as an ``application/octet-stream``
  REST ``/predictions`` body, at each ``--concurrency``.
- ``oip``: for each of ``--oip-models`` (``pool``: global average pool + linear, the ResNet-18
  input and output at almost no forward cost, so the protocol is the cost; ``resnet``: the
  ResNet-18-shaped CNN, forward-bound), batch 8, 1 worker, on torchwick, its archive declaring
  ``input__0`` FP32 ``[-1, 3, 224, 224]``: one 3x224x224 float32 input as raw bytes to REST
  ``/predictions``, as an OIP ``/v2/models/{m}/infer`` request with the binary tensor data
  extension, and in the OIP JSON tensor format.

The in-process forward ceiling (``bench_models.CeilingMeter``) is timed between the points.
CPU per point comes from ``/proc`` (frontend us per 2xx, client cores). Nothing is asserted:
it prints tables and ratios (and writes ``--json``). TorchServe is looked for in
``$TORCHSERVE_VENV`` (default ``/work/tsvenv``); without it the gRPC part runs torchwick alone.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from bench_client import LoadResult, new_event_loop, run_load
from bench_grpc_oip import (
    grpc_predict_once,
    grpc_ready,
    oip_binary_request,
    oip_json_request,
    predictions_request,
    raw_request,
    run_grpc_load,
)
from bench_models import BenchModel, CeilingMeter, build_model
from bench_procs import CpuSnapshot, difference, snapshot
from bench_servers import (
    HOST,
    LABELS,
    TORCHSERVE,
    TORCHWICK,
    ModelServing,
    Server,
    build_archive,
    remove_tree,
)
from serving_benchmark import fmt_ms, fmt_rate, table, torchserve_reason
from torch import nn

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
CORES = len(os.sched_getaffinity(0))
OIP_INPUT = "input__0"
#: The models of the OIP part; both take one 3x224x224 float32 input.
OIP_MODELS = {
    "pool": "global average pool + linear 3->1000 (the ResNet-18 input at almost no forward cost)",
    "resnet": "ResNet-18-shaped CNN",
}


class _Pool(nn.Module):
    """A ResNet-18-shaped input and output (1000 classes) with a forward of a few us."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))  # type: ignore[no-any-return]


def build_pool(directory: Path, seed: int = 0) -> BenchModel:
    """``pool`` as TorchScript with seeded weights; its body is ``resnet``'s (the same input)."""
    resnet_input = torch.randn((3, 224, 224), generator=torch.Generator().manual_seed(seed + 1))
    torch.manual_seed(seed)
    scripted = torch.jit.script(_Pool().eval())
    path = directory / "pool.pt"
    scripted.save(str(path))  # type: ignore[no-untyped-call]
    body = resnet_input.numpy().astype("<f4").tobytes()
    return BenchModel("pool", path, (3, 224, 224), body, "application/octet-stream")


#: One point's load: called with the window's start and end marks (CPU snapshots).
Load = Callable[[Callable[[], None], Callable[[], None]], LoadResult]


@dataclass(frozen=True)
class Options:
    parts: tuple[str, ...]
    oip_models: tuple[str, ...]
    concurrency: tuple[int, ...]
    seconds: float
    warmup: float
    repeats: int
    max_batch_delay: int
    grpc_channels: int
    torchserve_venv: Path
    torchwick_python: Path
    json_path: Path | None
    keep: bool


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--parts", default="grpc,oip", help="of grpc,oip (grpc,oip)")
    add("--oip-models", default="pool,resnet", help=f"of {','.join(OIP_MODELS)} (pool,resnet)")
    add("--concurrency", default="1,32", help="in-flight requests per point (1,32)")
    add("--seconds", type=float, default=4.0, help="measured seconds per point (4)")
    add("--warmup", type=float, default=0.5, help="discarded seconds per point (0.5)")
    add("--repeats", type=int, default=3, help="points per variant and concurrency (3)")
    add("--max-batch-delay", type=int, default=5, help="ms, both configs batch 8 (5)")
    add("--grpc-channels", type=int, default=1, help="client channels per gRPC point (1)")
    add(
        "--torchserve-venv",
        type=Path,
        default=Path(os.environ.get("TORCHSERVE_VENV", "/work/tsvenv")),
    )
    add("--torchwick-python", type=Path, default=Path(sys.executable))
    add("--json", type=Path, help="also write every point to this file")
    add("--keep", action="store_true", help="keep the work dir (archives, server logs)")
    args = parser.parse_args(argv)
    parts = tuple(p for p in args.parts.split(",") if p)
    if not parts or any(p not in ("grpc", "oip") for p in parts):
        parser.error(f"--parts: expected grpc and/or oip, got {args.parts!r}")
    oip_models = tuple(m for m in args.oip_models.split(",") if m)
    if any(m not in OIP_MODELS for m in oip_models):
        parser.error(f"--oip-models: expected some of {', '.join(OIP_MODELS)}")
    return Options(
        parts=parts,
        oip_models=oip_models,
        concurrency=tuple(int(c) for c in args.concurrency.split(",") if c),
        seconds=args.seconds,
        warmup=args.warmup,
        repeats=max(1, args.repeats),
        max_batch_delay=args.max_batch_delay,
        grpc_channels=max(1, args.grpc_channels),
        torchserve_venv=args.torchserve_venv,
        torchwick_python=args.torchwick_python,
        json_path=args.json,
        keep=args.keep,
    )


def say(text: str = "") -> None:
    print(text, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass(frozen=True)
class Variant:
    """One way to send the part's request to one server: a label and how to load it."""

    server: str
    protocol: str  # grpc | rest | oip-binary | oip-json


def send_once(port: int, request: bytes, timeout_s: float = 120.0) -> tuple[int, bytes]:
    """Send one pre-built HTTP/1.1 request on a fresh connection; its status and body."""
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


class Run:
    """What one run starts and measures; ``close`` stops every server it started."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.workdir = Path(tempfile.mkdtemp(prefix="torchwick-protocols-"))
        self.http = asyncio.Runner(loop_factory=new_event_loop)
        self.grpc = asyncio.Runner()  # grpc.aio wants asyncio's own loop
        self.meter = CeilingMeter()
        self.running: list[Server] = []
        self.points: list[dict[str, Any]] = []
        self.ceilings: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def close(self) -> None:
        for server in self.running:
            server.stop()
        self.running.clear()
        self.http.close()
        self.grpc.close()
        if not self.options.keep:
            remove_tree(self.workdir)
        else:
            say(f"work dir kept: {self.workdir}")

    def archive(self, server: str, model: BenchModel, config: Path | None) -> Path:
        store = self.workdir / f"store-{server}"
        extra = self.workdir / "build" / model.name / "input_shape.json"
        extra.parent.mkdir(parents=True, exist_ok=True)
        extra.write_text(json.dumps({"shape": list(model.input_shape)}))
        archiver = (
            [str(self.options.torchserve_venv / "bin" / "torch-model-archiver")]
            if server == TORCHSERVE
            else [str(self.options.torchwick_python), "-m", "torchwick.archiver"]
        )
        build_archive(
            archiver, name=model.name, serialized_file=model.scripted_path,
            handler=HERE / "bench_handler.py", extra_files=[extra], export_path=store,
            config_file=config,
        )  # fmt: skip
        return store

    def start(self, kind: str, store: Path, model: BenchModel, probe: tuple[str, bytes]) -> Server:
        prefix = (
            [str(self.options.torchserve_venv / "bin" / "torchserve")]
            if kind == TORCHSERVE
            else [str(self.options.torchwick_python), "-m", "torchwick.server"]
        )
        serving = ModelServing(model.name, f"{model.name}.mar", 8, self.options.max_batch_delay, 1)
        server = Server(
            kind=kind, command_prefix=prefix, workdir=self.workdir / f"{kind}-{model.name}",
            model_store=store, models=[serving],
            job_queue_size=max(100, 2 * max(self.options.concurrency)),
        )  # fmt: skip
        self.running.append(server)
        server.start(60.0, (probe[0], probe[1], "application/octet-stream"))
        self.grpc.run(grpc_ready(f"{HOST}:{server.grpc_inference_port}", 60.0))
        return server

    def ceiling(self, part: str, model: BenchModel, batch: int) -> None:
        found = self.meter.measure(model, batch, CORES, 0.5)
        self.ceilings.append({"part": part, "batch": batch, "samples_per_s": found.samples_per_s})

    def measure(
        self,
        *,
        part: str,
        variant: Variant,
        server: Server,
        bystanders: Sequence[Server],
        load: Load,
        concurrency: int,
        repeat: int,
    ) -> None:
        marks: list[CpuSnapshot] = []

        def mark() -> None:
            marks.append(
                snapshot(server.root_pid, server.classify, [b.root_pid for b in bystanders])
            )

        result = load(mark, mark)
        time.sleep(0.1)
        cpu = difference(marks[0], marks[1])
        window = result.window_s or float("nan")
        record = {
            "part": part, "server": variant.server, "protocol": variant.protocol,
            "concurrency": concurrency, "repeat": repeat, "window_s": result.window_s,
            "ok": result.ok, "throughput": result.throughput, "p50_ms": result.p(0.5),
            "p90_ms": result.p(0.9), "p99_ms": result.p(0.99), "errors": result.errors,
            "statuses": result.statuses,
            "frontend_us_per_request": cpu.frontend_s / result.ok * 1e6 if result.ok else None,
            "frontend_cores": cpu.frontend_s / window, "workers_cores": cpu.workers_s / window,
            "client_cores": cpu.client_s / window, "rest_cores": cpu.rest_of_machine_s / window,
        }  # fmt: skip
        self.points.append(record)
        say(
            f"   {part:<4} {LABELS[variant.server]:<10} {variant.protocol:<10} c={concurrency:<3}"
            f" #{repeat + 1}: {fmt_rate(result.throughput):>7} req/s  p50 "
            f"{fmt_ms(result.p(0.5))} ms  errors {result.errors}"
        )

    def http_load(
        self, port: int, request: bytes, concurrency: int, warmup: float | None = None
    ) -> Load:
        def load(start: Callable[[], None], end: Callable[[], None]) -> LoadResult:
            return self.http.run(run_load(
                HOST, port, request, concurrency=concurrency,
                warmup_s=self.options.warmup if warmup is None else warmup,
                seconds=self.options.seconds, on_window_start=start, on_window_end=end,
            ))  # fmt: skip

        return load

    def grpc_load(
        self, port: int, request: Any, concurrency: int, warmup: float | None = None
    ) -> Load:
        def load(start: Callable[[], None], end: Callable[[], None]) -> LoadResult:
            return self.grpc.run(run_grpc_load(
                f"{HOST}:{port}", request, concurrency=concurrency,
                warmup_s=self.options.warmup if warmup is None else warmup,
                seconds=self.options.seconds, channels=self.options.grpc_channels,
                on_window_start=start, on_window_end=end,
            ))  # fmt: skip

        return load

    # ---- the parts

    def part_grpc(self, model: BenchModel) -> None:
        body = np.asarray(json.loads(model.body), dtype="<f4").tobytes()
        kinds = [TORCHWICK]
        reason = torchserve_reason(self.options.torchserve_venv)
        if reason is None:
            kinds.append(TORCHSERVE)
        else:
            self.notes.append(f"TorchServe skipped: {reason}")
        servers = {
            k: self.start(k, self.archive(k, model, None), model, ("/predictions/mlp", body))
            for k in kinds
        }
        request = predictions_request(model.name, body)
        for kind, server in servers.items():
            answer = self.run_coroutine(
                grpc_predict_once(f"{HOST}:{server.grpc_inference_port}", request)
            )
            say(f"   {LABELS[kind]} gRPC answer: {answer[:80]!r}")
        variants = [Variant(k, p) for p in ("grpc", "rest") for k in kinds]

        def loader(variant: Variant, server: Server, c: int, warmup: float | None) -> Load:
            if variant.protocol == "grpc":
                return self.grpc_load(server.grpc_inference_port, request, c, warmup)
            rest = raw_request(HOST, server.inference_port, "/predictions/mlp", body)
            return self.http_load(server.inference_port, rest, c, warmup)

        self.sweep(
            part="grpc", model=model, batch=8, servers=servers, variants=variants, loader=loader
        )

    def part_oip(self, model: BenchModel) -> None:
        part = f"oip-{model.name}"
        config = self.workdir / f"{model.name}-model-config.yaml"
        config.write_text(
            "metadata:\n  inputs:\n"
            f"    - {{name: {OIP_INPUT}, datatype: FP32, shape: [-1, 3, 224, 224]}}\n"
        )
        array = np.frombuffer(model.body, dtype="<f4").reshape(1, *model.input_shape)
        server = self.start(
            TORCHWICK,
            self.archive(TORCHWICK, model, config),
            model,
            (f"/predictions/{model.name}", model.body),
        )
        port = server.inference_port
        requests = {
            "rest": raw_request(HOST, port, f"/predictions/{model.name}", model.body),
            "oip-binary": oip_binary_request(HOST, port, model.name, OIP_INPUT, array),
            "oip-json": oip_json_request(HOST, port, model.name, OIP_INPUT, array),
        }
        for protocol, request in requests.items():
            status, answer = send_once(port, request)
            say(f"   {protocol}: {len(request):,} bytes sent, answer {status} {answer[:100]!r}")
        variants = [Variant(TORCHWICK, p) for p in requests]
        self.sweep(
            part=part,
            model=model,
            batch=8,
            servers={TORCHWICK: server},
            variants=variants,
            loader=lambda v, s, c, w: self.http_load(port, requests[v.protocol], c, w),
        )

    def run_coroutine(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.grpc.run(coroutine)

    def sweep(
        self,
        *,
        part: str,
        model: BenchModel,
        batch: int,
        servers: dict[str, Server],
        variants: Sequence[Variant],
        loader: Callable[
            [Variant, Server, int, float | None],
            Load,
        ],
    ) -> None:
        for variant in variants:  # warm-up: JIT, caches, connections
            server = servers[variant.server]
            loader(variant, server, max(self.options.concurrency), 0.0)(lambda: None, lambda: None)
        for ci, concurrency in enumerate(self.options.concurrency):
            for repeat in range(self.options.repeats):
                self.ceiling(part, model, batch)
                if part.startswith("oip"):
                    self.ceiling(part, model, 1)
                order = variants if (ci + repeat) % 2 == 0 else list(reversed(variants))
                for variant in order:
                    server = servers[variant.server]
                    others = [s for k, s in servers.items() if k != variant.server]
                    self.measure(
                        part=part,
                        variant=variant,
                        server=server,
                        bystanders=others,
                        load=loader(variant, server, concurrency, None),
                        concurrency=concurrency,
                        repeat=repeat,
                    )
        for server in servers.values():
            server.stop()
            self.running.remove(server)


# --- the report -----------------------------------------------------------------------------------


def summarize(points: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Medians over the repeats; ``spread`` is half of (max - min) / median of req/s."""
    rates = [p["throughput"] for p in points]
    mid = median(rates)

    def of(key: str) -> float:
        return median([p[key] for p in points if p[key] is not None])

    return {
        "throughput": mid,
        "spread": (max(rates) - min(rates)) / mid / 2 if mid else float("nan"),
        "p50": of("p50_ms"),
        "p99": of("p99_ms"),
        "errors": float(sum(p["errors"] for p in points)),
        "frontend_us": of("frontend_us_per_request"),
        "workers_cores": of("workers_cores"),
        "client_cores": of("client_cores"),
        "rest_cores": of("rest_cores"),
    }


def ratio(numerator: float, denominator: float) -> str:
    if not numerator or not denominator or math.isnan(numerator) or math.isnan(denominator):
        return "-"
    return f"{numerator / denominator:.2f}x"


def report(run: Run) -> None:
    buckets: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for point in run.points:
        key = (point["part"], point["server"], point["protocol"], point["concurrency"])
        buckets.setdefault(key, []).append(point)
    got = {key: summarize(points) for key, points in buckets.items()}

    def ceiling(part: str, batch: int) -> float:
        return median(
            [c["samples_per_s"] for c in run.ceilings if (c["part"], c["batch"]) == (part, batch)]
        )

    def cells(s: dict[str, float]) -> list[str]:
        return [
            fmt_rate(s["throughput"]),
            f"{s['spread'] * 100:.0f}%",
            fmt_ms(s["p50"]),
            fmt_ms(s["p99"]),
            f"{s['errors']:.0f}",
            fmt_rate(s["frontend_us"]),
            f"{s['workers_cores']:.2f}",
            f"{s['client_cores']:.2f}",
            f"{s['rest_cores']:.2f}",
        ]

    heads = [
        "req/s",
        "±",
        "p50 ms",
        "p99 ms",
        "err",
        "frontend us/req",
        "workers",
        "client",
        "rest",
    ]
    for note in run.notes:
        say(f"  NOTE: {note}")
    if any(k[0] == "grpc" for k in got):
        say()
        say(
            "== gRPC Predictions and REST /predictions: MLP batch 8, 1 worker, raw float32 body "
            f"(medians; in-process batch-8 ceiling {fmt_rate(ceiling('grpc', 8))} samples/s)"
        )
        rows = []
        for c in run.options.concurrency:
            for protocol in ("grpc", "rest"):
                for kind in (TORCHWICK, TORCHSERVE):
                    s = got.get(("grpc", kind, protocol, c))
                    if s is not None:
                        rows.append([protocol, str(c), LABELS[kind], *cells(s)])
        say(table(["protocol", "c", "server", *heads], rows))
        say("  cores busy during the window: workers / client (this process) / rest of machine")
        say()
        say("== gRPC ratios (target: torchwick gRPC req/s at c=32 >= 1.5x TorchServe's gRPC)")
        rows = []
        for c in run.options.concurrency:
            tw_g, ts_g = (
                got.get(("grpc", TORCHWICK, "grpc", c)),
                got.get(("grpc", TORCHSERVE, "grpc", c)),
            )
            tw_r, ts_r = (
                got.get(("grpc", TORCHWICK, "rest", c)),
                got.get(("grpc", TORCHSERVE, "rest", c)),
            )
            nan = {"throughput": float("nan"), "p50": float("nan")}
            tw_g, ts_g, tw_r, ts_r = (x or nan for x in (tw_g, ts_g, tw_r, ts_r))
            rows.append(
                [
                    str(c),
                    ratio(tw_g["throughput"], ts_g["throughput"]),
                    ratio(ts_g["p50"], tw_g["p50"]),
                    ratio(tw_r["throughput"], ts_r["throughput"]),
                    ratio(tw_g["throughput"], tw_r["throughput"]),
                    ratio(ts_g["throughput"], ts_r["throughput"]),
                ]
            )
        say(table(["c", "gRPC tw/TS req/s", "gRPC p50 TS/tw", "REST tw/TS req/s", "tw gRPC/REST",
                   "TS gRPC/REST"], rows))  # fmt: skip
    for part in dict.fromkeys(k[0] for k in got if k[0].startswith("oip")):
        say()
        say(
            f"== OIP on torchwick: {OIP_MODELS[part.removeprefix('oip-')]}, batch 8, 1 worker, "
            f"one 3x224x224 FP32 input (medians; in-process ceiling batch 8 "
            f"{fmt_rate(ceiling(part, 8))}, batch 1 {fmt_rate(ceiling(part, 1))} samples/s)"
        )
        rows = []
        for c in run.options.concurrency:
            raw = got.get((part, TORCHWICK, "rest", c))
            for protocol in ("rest", "oip-binary", "oip-json"):
                s = got.get((part, TORCHWICK, protocol, c))
                if s is None:
                    continue
                versus = (
                    [ratio(s["throughput"], raw["throughput"]), ratio(raw["p50"], s["p50"])]
                    if raw
                    else ["-", "-"]
                )
                limit = ceiling(part, 8 if c > 1 else 1)
                rows.append([protocol, str(c), *cells(s), *versus, ratio(s["throughput"], limit)])
        say(table(["variant", "c", *heads, "req/s vs raw", "p50 raw/this", "vs ceiling"], rows))
        say(
            "  target: oip-binary within 10% of raw-bytes REST (req/s vs raw >= 0.90x). "
            "vs ceiling: batch-1 ceiling at c=1, batch-8 at c>1."
        )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    run = Run(options)
    started = time.perf_counter()
    say("== torchwick protocol benchmark ==")
    say(f"  {CORES} cores, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; points {options.seconds:g} s after "
        f"{options.warmup:g} s warm-up, {options.repeats} repeat(s), alternated")  # fmt: skip
    try:
        build = run.workdir / "build"
        build.mkdir(parents=True, exist_ok=True)
        if "grpc" in options.parts:
            say("-- grpc: MLP batch 8")
            run.part_grpc(build_model("mlp", build))
        if "oip" in options.parts:
            for name in options.oip_models:
                say(f"-- oip: {OIP_MODELS[name]}, batch 8")
                model = build_pool(build) if name == "pool" else build_model(name, build)
                run.part_oip(model)
    finally:
        run.close()
    report(run)
    say()
    say(f"total {time.perf_counter() - started:.0f} s")
    if options.json_path is not None:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        data = {"points": run.points, "ceilings": run.ceilings, "notes": run.notes}
        options.json_path.write_text(json.dumps(data, indent=2) + "\n")
        say(f"results written to {options.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
