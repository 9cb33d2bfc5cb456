"""GPU pipeline benchmark: ResNet-50 with JPEG requests through ``image_classifier``.

Compares, on the same device and the same request (one JPEG, resized to 256 and centre-cropped
to 224 by the handler):

* ``ceiling-serial``: in this process, decode+transform a batch, forward it, softmax/top-5, as
  one loop (no server, no HTTP);
* ``ceiling-overlap``: the same, with the next batch decoded on a thread pool while the
  current one runs (the most a pipelined server could reach);
* ``torchwick-serial``: torchwick, ``handler.pipeline_depth: 1`` (the default);
* ``torchwick-pipelined``: torchwick, ``pipeline_depth: 2`` and ``preprocess_threads: N``
  (pinned host buffers and non-blocking copies apply to both torchwick variants on CUDA);
* ``torchwick-graphs`` (``--cuda-graphs``): the pipelined variant plus ``cuda_graphs: true``;
* ``torchwick-decode-pool`` and ``torchwick-depth2`` (``--ablation``): each half of the
  pipelined variant alone;
* ``torchserve``: TorchServe 0.12 with its built-in ``image_classifier`` (or, where its
  Python has no torchvision, ``ts_pil_image_handler.py``, the same steps with PIL).

Every server gets the same ``models=`` settings (batch size, delay, workers) and is loaded with
a closed loop of ``--concurrency`` keep-alive connections (``bench_client``) for a warm-up and a
``--seconds`` window; the servers run one after another, never side by side. Throughput is
images per second of 2xx answers; ratios are to TorchServe and to the overlapped ceiling.

``--quick`` (for a CPU smoke run) shrinks the model's width to 16, the JPEG to 320x240 and the
windows to a few seconds: its figures show the harness works, not what a GPU does.

Usage (GPU machine: see scripts/gpu_check.sh):
    python benchmarks/gpu_benchmark.py --device cuda --json out.json
    python benchmarks/gpu_benchmark.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import yaml  # noqa: E402
from bench_client import build_request, run_load  # noqa: E402
from bench_servers import (  # noqa: E402
    HOST,
    TORCHSERVE,
    TORCHWICK,
    ModelServing,
    Server,
    build_archive,
)
from gpu_models import jpeg_body, scripted_resnet50  # noqa: E402

from torchwick.handlers.builtin.vision import ImageTransform, decode_image  # noqa: E402


@dataclass
class Figure:
    """One measured variant."""

    variant: str
    images_per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    note: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _decode(raw: bytes, transform: ImageTransform) -> torch.Tensor:
    return transform(decode_image(raw, None))


def measure_ceiling(
    model_path: Path, body: bytes, device: torch.device, *, batch: int, threads: int, seconds: float
) -> list[Figure]:
    """Images/s of decode+forward in this process: serial, and decode overlapped."""
    model = torch.jit.load(str(model_path), map_location=device).eval()  # type: ignore[no-untyped-call]
    transform = ImageTransform()
    pool = ThreadPoolExecutor(max(1, threads))

    def decode_batch() -> torch.Tensor:
        tensors = list(pool.map(lambda _i: _decode(body, transform), range(batch)))
        stacked = torch.stack(tensors)
        if device.type == "cuda":
            stacked = stacked.pin_memory().to(device, non_blocking=True)
        return stacked

    def forward(x: torch.Tensor) -> None:
        probabilities = torch.softmax(model(x).float(), dim=1)
        torch.topk(probabilities, 5, dim=1)[0].cpu()

    figures = []
    with torch.inference_mode():
        for _ in range(3):
            forward(decode_batch())
        _sync(device)
        for overlap in (False, True):
            images = 0
            start = time.perf_counter()
            pending = pool.submit(decode_batch) if overlap else None
            while time.perf_counter() - start < seconds:
                if pending is not None:
                    x = pending.result()
                    pending = pool.submit(decode_batch)
                else:
                    x = decode_batch()
                forward(x)
                images += batch
            if pending is not None:
                pending.result()
            _sync(device)
            elapsed = time.perf_counter() - start
            name = "ceiling-overlap" if overlap else "ceiling-serial"
            figures.append(Figure(name, images / elapsed, note=f"batch {batch}, {threads} threads"))
    pool.shutdown()
    return figures


def _handler_config(variant: str, threads: int) -> dict[str, Any]:
    if variant == "torchwick-serial":
        return {}
    if variant == "torchwick-decode-pool":  # --ablation: the decode pool alone
        return {"preprocess_threads": threads}
    if variant == "torchwick-depth2":  # --ablation: the second batch in flight alone
        return {"pipeline_depth": 2}
    config: dict[str, Any] = {"pipeline_depth": 2, "preprocess_threads": threads}
    if variant == "torchwick-graphs":
        config["cuda_graphs"] = True
    return config


def _torchwick_archive(work: Path, model_path: Path, variant: str, threads: int) -> Path:
    store = work / f"store-{variant}"
    config = work / f"{variant}-config.yaml"
    handler = _handler_config(variant, threads)
    config.write_text(yaml.safe_dump({"handler": handler} if handler else {"responseTimeout": 120}))
    return build_archive(
        [sys.executable, "-m", "torchwick.archiver"],
        name="resnet50",
        serialized_file=model_path,
        handler=Path("image_classifier"),
        extra_files=[],
        export_path=store,
        config_file=config,
    )


def _torchserve_handler(ts_bin: Path, choice: str) -> Path:
    if choice == "pil":
        return HERE / "ts_pil_image_handler.py"
    if choice == "builtin":
        return Path("image_classifier")
    # auto: the built-in needs torchvision (and captum) importable by TorchServe's Python.
    python = _ts_python(ts_bin)
    probe = subprocess.run(
        [python, "-c", "import torchvision, captum"], capture_output=True, timeout=120, check=False
    )
    return Path("image_classifier") if probe.returncode == 0 else HERE / "ts_pil_image_handler.py"


def _ts_python(ts_bin: Path) -> str:
    first = (ts_bin / "torchserve").read_text(errors="replace").splitlines()[0]
    return first[2:].strip() if first.startswith("#!") else sys.executable


def _serve_and_load(
    server: Server, body: bytes, args: argparse.Namespace, variant: str, note: str
) -> Figure:
    path = "/predictions/resnet50"
    try:
        server.start(args.start_timeout, (path, body, "image/jpeg"))
        request = build_request(HOST, server.inference_port, path, body, "image/jpeg")
        result = asyncio.run(
            run_load(
                HOST,
                server.inference_port,
                request,
                concurrency=args.concurrency,
                warmup_s=args.warmup,
                seconds=args.seconds,
                request_timeout_s=120.0,
            )
        )
    finally:
        server.stop()
    return Figure(
        variant,
        result.throughput,
        result.p(0.5),
        result.p(0.99),
        result.errors,
        note,
    )


def run(args: argparse.Namespace) -> list[Figure]:
    device = torch.device(args.device)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpubench"))
    work.mkdir(parents=True, exist_ok=True)
    width = 16 if args.quick else 64
    model_path = work / "resnet50.pt"
    scripted_resnet50(str(model_path), width)
    body = jpeg_body(*((320, 240) if args.quick else (640, 480)))
    print(f"model: ResNet-50 layout, width {width}; JPEG {len(body)} bytes; device {device}")
    figures = measure_ceiling(
        model_path,
        body,
        device,
        batch=args.batch_size,
        threads=args.threads,
        seconds=args.ceiling_seconds,
    )
    serving = [ModelServing("resnet50", "resnet50.mar", args.batch_size, args.delay, args.workers)]
    env = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0")}
    if device.type == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # both servers place workers on the CPU
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]  # carried wheels (gpu_check.sh)
    variants = [] if args.only_torchserve else ["torchwick-serial", "torchwick-pipelined"]
    if args.ablation and not args.only_torchserve:
        variants[1:1] = ["torchwick-decode-pool", "torchwick-depth2"]
    if args.cuda_graphs and device.type == "cuda" and not args.only_torchserve:
        variants.append("torchwick-graphs")
    for variant in variants:
        _torchwick_archive(work, model_path, variant, args.threads)
    # Rounds alternate the order (A B, B A, ...) so that a machine getting busier or quieter
    # during the run does not favour whichever variant runs first.
    for round_index in range(args.rounds):
        ordered = variants if round_index % 2 == 0 else list(reversed(variants))
        for variant in ordered:
            server = Server(
                kind=TORCHWICK,
                command_prefix=[sys.executable, "-m", "torchwick.server"],
                workdir=work / variant,
                model_store=work / f"store-{variant}",
                models=serving,
                extra_env=env,
            )
            name = variant if args.rounds == 1 else f"{variant}#{round_index + 1}"
            note = str(_handler_config(variant, args.threads))
            figures.append(_serve_and_load(server, body, args, name, note))
            print(f"  {figures[-1]}")
    ts_bin = Path(args.torchserve_bin)
    if args.skip_torchserve:
        print("torchserve: skipped (--skip-torchserve)")
    elif not (ts_bin / "torchserve").exists() or shutil.which("java") is None:
        print(f"torchserve: not run (no {ts_bin}/torchserve, or no java on PATH)")
    else:
        handler = _torchserve_handler(ts_bin, args.ts_handler)
        build_archive(
            [str(ts_bin / "torch-model-archiver")],
            name="resnet50",
            serialized_file=model_path,
            handler=handler,
            extra_files=[],
            export_path=work / "store-torchserve",
        )
        server = Server(
            kind=TORCHSERVE,
            command_prefix=[str(ts_bin / "torchserve")],
            workdir=work / "torchserve",
            model_store=work / "store-torchserve",
            models=serving,
            extra_env=env,
        )
        figures.append(_serve_and_load(server, body, args, "torchserve", f"handler {handler.name}"))
    return figures


def report(figures: list[Figure]) -> dict[str, Any]:
    by_name = {f.variant: f for f in figures}
    ts = by_name.get("torchserve")
    ceiling = by_name.get("ceiling-overlap")
    rows = []
    columns = ("img/s", "p50 ms", "p99 ms", "errors", "xTS", "/ceil")
    widths = (9, 8, 8, 6, 6, 6)
    header = " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
    print(f"\n{'variant':22} {header}  note")
    for f in figures:
        vs_ts = f.images_per_s / ts.images_per_s if ts and ts.images_per_s > 0 else None
        vs_ceiling = (
            f.images_per_s / ceiling.images_per_s if ceiling and ceiling.images_per_s else None
        )
        rows.append({**asdict(f), "vs_torchserve": vs_ts, "vs_ceiling": vs_ceiling})
        p50 = "-" if f.p50_ms is None else f"{f.p50_ms:.1f}"
        p99 = "-" if f.p99_ms is None else f"{f.p99_ms:.1f}"
        print(
            f"{f.variant:22} {f.images_per_s:9.1f} {p50:>8} {p99:>8} {f.errors:6d} "
            f"{'-' if vs_ts is None else f'{vs_ts:.2f}':>6} "
            f"{'-' if vs_ceiling is None else f'{vs_ceiling:.2f}':>6}  {f.note}"
        )
    return {"rows": rows, "machine": _machine()}


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small model and short windows")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--delay", type=int, default=5, help="maxBatchDelay (ms)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="decode threads")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument("--ceiling-seconds", type=float, default=None)
    parser.add_argument("--start-timeout", type=float, default=180.0)
    parser.add_argument("--cuda-graphs", action="store_true")
    parser.add_argument(
        "--rounds", type=int, default=1, help="torchwick variants in alternating order"
    )
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also the decode pool alone and pipeline_depth 2 alone",
    )
    parser.add_argument(
        "--torchserve-bin", default=os.environ.get("TORCHSERVE_BIN", "/work/tsvenv/bin")
    )
    parser.add_argument("--ts-handler", choices=("auto", "builtin", "pil"), default="auto")
    parser.add_argument("--skip-torchserve", action="store_true")
    parser.add_argument(
        "--only-torchserve",
        action="store_true",
        help="the ceiling and TorchServe only (gpu_check.sh's second part)",
    )
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    quick = args.quick
    args.batch_size = args.batch_size or (4 if quick else 32)
    args.concurrency = args.concurrency or (8 if quick else 64)
    args.threads = args.threads or (2 if quick else 8)
    args.seconds = args.seconds or (10.0 if quick else 20.0)
    args.warmup = args.warmup or (2.0 if quick else 5.0)
    args.ceiling_seconds = args.ceiling_seconds or (4.0 if quick else 10.0)
    figures = run(args)
    result = report(figures)
    result["settings"] = {k: v for k, v in vars(args).items() if k != "json"}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
