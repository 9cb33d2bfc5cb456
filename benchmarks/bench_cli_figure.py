"""Serve one MLP archive on torchwick and real TorchServe 0.12, then ``torchwick bench`` both.

The figure in ``docs/performance.md`` ("``torchwick bench``") comes from this script. It builds
the benchmark MLP (``bench_models.py``: 64 -> 256 -> 256 -> 10, seeded random weights,
TorchScript), archives it with ``bench_handler.py`` using each server's own
``torch-model-archiver``, starts both servers side by side (``bench_servers.py``: free
127.0.0.1 ports, token auth off, batch 1, one worker each, TorchServe's defaults otherwise),
and runs ``torchwick bench URL --compare URL2`` as a user would: a closed-loop sweep, then an
open-loop (Poisson) sweep. Both servers are always stopped; the work dir is removed.

    .venv/bin/python benchmarks/bench_cli_figure.py  # PNGs: docs/images, JSON: benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_models import build_model
from bench_servers import TORCHSERVE, TORCHWICK, ModelServing, Server, build_archive

HERE = Path(__file__).resolve().parent
HANDLER = HERE / "bench_handler.py"
START_TIMEOUT_S = 120.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="PNG folder")
    parser.add_argument(
        "--results", type=Path, default=Path("benchmarks/results"), help="JSON folder"
    )
    parser.add_argument("--torchserve-venv", type=Path, default=Path("/work/tsvenv"))
    parser.add_argument("--concurrency", default="1,4,16,32")
    parser.add_argument("--rate", default="200,500,1000")
    parser.add_argument("--duration", default="3")
    parser.add_argument("--repeats", default="3")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    torchwick = Path(sys.executable).parent / "torchwick"
    with tempfile.TemporaryDirectory(prefix="bench-fig-") as tmp:
        work = Path(tmp)
        model = build_model("mlp", work)
        shape = work / "input_shape.json"
        shape.write_text(json.dumps({"shape": list(model.input_shape)}))
        body = work / "body.json"
        body.write_bytes(model.body)
        archivers = {
            TORCHWICK: [sys.executable, "-m", "torchwick.archiver"],
            TORCHSERVE: [str(args.torchserve_venv / "bin" / "torch-model-archiver")],
        }
        prefixes = {
            TORCHWICK: [sys.executable, "-m", "torchwick.server"],
            TORCHSERVE: [str(args.torchserve_venv / "bin" / "torchserve")],
        }
        servers: dict[str, Server] = {}
        try:
            for kind in (TORCHWICK, TORCHSERVE):
                store = work / f"store-{kind}"
                build_archive(
                    archivers[kind],
                    name="mlp",
                    serialized_file=model.scripted_path,
                    handler=HANDLER,
                    extra_files=[shape],
                    export_path=store,
                )
                server = Server(
                    kind=kind,
                    command_prefix=prefixes[kind],
                    workdir=work / kind,
                    model_store=store,
                    models=[ModelServing("mlp", "mlp.mar", 1, 0, 1)],
                )
                servers[kind] = server
                server.start(START_TIMEOUT_S, ("/predictions/mlp", model.body, model.content_type))
            urls = [
                f"http://127.0.0.1:{servers[k].inference_port}/predictions/mlp"
                for k in (TORCHWICK, TORCHSERVE)
            ]
            common = [
                urls[0], "--compare", urls[1], "--body-file", str(body),
                "--content-type", model.content_type, "--duration", args.duration,
                "--warmup", "1", "--repeats", args.repeats, "--progress", "never",
                "--label", "torchwick", "--compare-label", "TorchServe 0.12",
            ]  # fmt: skip
            for mode, loads in (("closed", args.concurrency), ("open", args.rate)):
                flag = "--concurrency" if mode == "closed" else "--rate"
                stem = f"bench-mlp-{mode}"
                command = [str(torchwick), "bench", *common, flag, loads]
                command += ["--json", str(args.results / f"{stem}.json")]
                command += ["--plot", str(args.out / f"{stem}.png")]
                print("$", " ".join(command), flush=True)
                subprocess.run(command, check=True, timeout=1800)
        finally:
            for server in servers.values():
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
