"""Start-up benchmark: start to first ``/ping`` 200, and register of a small model to 200.

Each *variant* is one way of running torchwick, started ``--repeats`` times in turn (the
variants are interleaved, so a noisy neighbour hits all of them alike):

- ``warm``: this checkout, ``warm_workers=1`` (the default): a register takes the warm spare;
- ``cold``: this checkout, ``warm_workers=0``: every worker is spawned cold;
- ``base``: another checkout (``--baseline-tree``, e.g. a ``git worktree`` of the previous
  commit) run by the same interpreter, its tree first on ``PYTHONPATH``; its defaults.

One run: start ``python -m torchwick.server --foreground`` with an empty model store except
for the archive (nothing loaded at start) and time the first ``/ping`` 200 (polled every 5 ms).
Then wait until the server is idle (``warm``: until it logged its spare ready; the others: the
same settle time as ``--settle-s``), time ``POST /models?url=mlp.mar&initial_workers=1&
synchronous=true`` to its 200, check one prediction against the in-process model, stop the
server (SIGTERM) and check that no process of its session is left.

The phase breakdown is measured beside the runs, in fresh interpreters: a bare interpreter,
the frontend's imports (``torchwick.server.cli`` and ``.app``), ``import torch`` and torch plus
the handler runtime (what a cold worker imports before its model), and, from the server's log,
the time from the composition root's start to listening.

The model is the benchmarks' MLP (64 -> 256 -> 256 -> 10, TorchScript, seeded random weights)
with the benchmark handler, archived by torchwick's archiver. Bytecode: each server process
writes and reads its ``.pyc`` under a private ``PYTHONPYCACHEPREFIX`` (as an installed package
has them; this checkout is an editable install), and the first run of each variant is a
discarded warm-up. Medians and (min-max) ranges are printed; ``--json`` writes every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_models import build_model  # noqa: E402
from bench_procs import read_proc, tree  # noqa: E402
from bench_servers import free_ports  # noqa: E402

_LISTENING = re.compile(r"listening (\d+) ms after start")
_SPARE_READY = "warm spare worker ready"
_TAKES = re.compile(r"takes the warm spare worker \(pid (\d+)\)")


@dataclass
class Sample:
    """One run of one variant."""

    variant: str
    ping_s: float
    register_s: float
    #: CPU seconds (user + system) the frontend had used when /ping first answered 200.
    ping_cpu_s: float
    #: CPU seconds the server's whole process tree used during the register.
    register_cpu_s: float
    listening_ms: float | None
    took_spare: bool
    answer_ok: bool
    leftover_pids: list[int] = field(default_factory=list)


@dataclass
class Variant:
    name: str
    tree: Path
    properties: list[str]
    wait_for_spare: bool


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _post(url: str, body: bytes = b"", content_type: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise RuntimeError(f"timed out waiting for {what}")


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state; the session id is field 6 of stat, index 3 after the name.
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one live process (0 when it is gone)."""
    info = read_proc(pid)
    return 0.0 if info is None else info.cpu_s


def _tree_cpu_s(root: int) -> dict[int, float]:
    """CPU seconds of ``root`` and every live descendant, by pid."""
    return {pid: info.cpu_s for pid, info in tree(root).items()}


def _env(tree: Path, pycache: Path, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TS_", "TORCHWICK_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        {
            "PYTHONPATH": str(tree),
            "PYTHONPYCACHEPREFIX": str(pycache),
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": str(tmp),
        }
    )
    return env


def run_once(
    variant: Variant, work: Path, mar: Path, body: bytes, *, expected: list[float], settle_s: float
) -> Sample:
    """Start, ping, register, predict, stop: one sample (see the module docs)."""
    root = Path(tempfile.mkdtemp(prefix=f"su-{variant.name}-", dir=work))
    store = root / "store"
    store.mkdir()
    shutil.copy(mar, store / mar.name)
    tmp = root / "tmp"
    tmp.mkdir()
    inference, management, metrics, grpc_i, grpc_m = free_ports(5)
    config = root / "config.properties"
    lines = [
        f"inference_address=http://127.0.0.1:{inference}",
        f"management_address=http://127.0.0.1:{management}",
        f"metrics_address=http://127.0.0.1:{metrics}",
        f"grpc_inference_port={grpc_i}",
        f"grpc_management_port={grpc_m}",
        f"model_store={store}",
        "disable_token_authorization=true",
        "enable_model_api=true",
        *variant.properties,
    ]
    config.write_text("\n".join(lines) + "\n")
    log = root / "server.log"
    command = [sys.executable, "-m", "torchwick.server", "--foreground", "--ncs"]
    command += ["--ts-config", str(config)]
    env = _env(variant.tree, work / "pycache" / variant.name, tmp)
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{inference}"
    try:
        _wait(lambda: _get(f"{base}/ping")[0] == 200, 120, "/ping 200")
        ping_s = time.perf_counter() - started
        ping_cpu_s = _cpu_s(process.pid)
        if variant.wait_for_spare:
            _wait(lambda: _SPARE_READY in log.read_text(errors="replace"), 120, "the spare")
        else:
            time.sleep(settle_s)
        url = f"http://127.0.0.1:{management}/models?url={mar.name}&initial_workers=1"
        before = _tree_cpu_s(process.pid)
        began = time.perf_counter()
        status, answer = _post(url + "&synchronous=true")
        register_s = time.perf_counter() - began
        after = _tree_cpu_s(process.pid)
        # A new worker counts from 0; a spare counts only what it used during the register.
        register_cpu_s = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
        if status != 200:
            raise RuntimeError(f"register answered {status}: {answer[:300]!r}")
        status, answer = _post(f"{base}/predictions/mlp", body)
        got = json.loads(answer) if status == 200 else None
        answer_ok = isinstance(got, list) and all(
            abs(a - b) < 1e-4 for a, b in zip(got, expected, strict=True)
        )
        text = log.read_text(errors="replace")
        listening = _LISTENING.search(text)
        took = _TAKES.search(text) is not None
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    # The workers' exits follow the frontend's by moments (they watch their parent).
    leftover: list[int] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        leftover = _session_pids(process.pid)
        if not leftover:
            break
        time.sleep(0.05)
    shutil.rmtree(root, ignore_errors=True)
    return Sample(
        variant.name,
        ping_s,
        register_s,
        ping_cpu_s,
        register_cpu_s,
        float(listening.group(1)) if listening else None,
        took,
        answer_ok,
        leftover,
    )


def _time_python(args: list[str], env: dict[str, str], repeats: int) -> dict[str, list[float]]:
    """Wall and CPU (user + system) seconds of ``python ARGS``, the first run discarded."""
    wall, cpu = [], []
    for _ in range(repeats + 1):
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        subprocess.run([sys.executable, *args], env=env, check=True, cwd="/")
        wall.append(time.perf_counter() - began)
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(now.ru_utime - used.ru_utime + now.ru_stime - used.ru_stime)
    return {"wall": wall[1:], "cpu": cpu[1:]}  # the first writes the bytecode


def phases(tree: Path, work: Path, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Fresh-interpreter timings of what a start and a cold worker pay before any model."""
    env = _env(tree, work / "pycache" / "phases", work)
    return {
        "interpreter": _time_python(["-c", "pass"], env, repeats),
        "frontend imports": _time_python(
            ["-c", "import torchwick.server.cli, torchwick.server.app"], env, repeats
        ),
        "import torch": _time_python(["-P", "-c", "import torch"], env, repeats),
        "torch + handler runtime": _time_python(
            ["-P", "-c", "import torch, torchwick.handlers.service"], env, repeats
        ),
    }


def _summary(values: list[float], unit: float = 1.0) -> str:
    if not values:
        return "-"
    scaled = [v * unit for v in values]
    return f"{statistics.median(scaled):.3f} ({min(scaled):.3f}-{max(scaled):.3f})"


def build(work: Path) -> tuple[Path, bytes, list[float]]:
    """The MLP archive, one request body and the in-process answer for it."""
    import torch

    model = build_model("mlp", work)
    shape = work / "input_shape.json"
    shape.write_text(json.dumps({"shape": list(model.input_shape)}))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torchwick.archiver",
            "--model-name",
            "mlp",
            "--version",
            "1.0",
            "--serialized-file",
            str(model.scripted_path),
            "--handler",
            str(HERE / "bench_handler.py"),
            "--extra-files",
            str(shape),
            "--export-path",
            str(work),
            "--force",
        ],
        check=True,
        cwd=work,
        capture_output=True,
    )
    module = torch.jit.load(str(model.scripted_path))  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        logits = module(torch.tensor(json.loads(model.body)).reshape(1, -1))[0]
    return work / "mlp.mar", model.body, [float(v) for v in logits]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-tree", type=Path, help="checkout of the commit to compare")
    parser.add_argument("--variants", default="warm,cold,base")
    parser.add_argument("--settle-s", type=float, default=3.0, help="idle wait before register")
    parser.add_argument("--json", type=Path, help="write every sample here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    try:
        mar, body, expected = build(work)
        variants = []
        for name in args.variants.split(","):
            if name == "warm":
                variants.append(Variant("warm", ROOT, ["warm_workers=1"], True))
            elif name == "cold":
                variants.append(Variant("cold", ROOT, ["warm_workers=0"], False))
            elif name == "base" and args.baseline_tree is not None:
                variants.append(Variant("base", args.baseline_tree.resolve(), [], False))
        samples: list[Sample] = []
        for repeat in range(args.repeats + 1):
            for variant in variants:
                sample = run_once(
                    variant, work, mar, body, expected=expected, settle_s=args.settle_s
                )
                if repeat > 0:  # the first run of each variant writes its bytecode
                    samples.append(sample)
                    print(
                        f"{variant.name:5} ping {sample.ping_s:.3f} s "
                        f"(cpu {sample.ping_cpu_s:.2f})  register {sample.register_s:.3f} s "
                        f"(cpu {sample.register_cpu_s:.2f})  spare={sample.took_spare} "
                        f"ok={sample.answer_ok} left={sample.leftover_pids}",
                        flush=True,
                    )
        breakdown = {
            variant.name: phases(variant.tree, work, args.repeats)
            for variant in variants
            if variant.name != "cold"  # the same tree as warm
        }
        print("\nmedian (min-max) over", args.repeats, "runs; seconds")
        heads = ("ping", "ping cpu", "register", "register cpu", "listening ms")
        print(f"{'variant':8} " + " ".join(f"{h:22}" for h in heads))
        for variant in variants:
            mine = [s for s in samples if s.variant == variant.name]
            listening = [s.listening_ms for s in mine if s.listening_ms is not None]
            columns = (
                _summary([s.ping_s for s in mine]),
                _summary([s.ping_cpu_s for s in mine]),
                _summary([s.register_s for s in mine]),
                _summary([s.register_cpu_s for s in mine]),
                _summary(listening),
            )
            print(f"{variant.name:8} " + " ".join(f"{c:22}" for c in columns))
        print(f"load average at the end: {os.getloadavg()}")
        for name, table in breakdown.items():
            print(f"\nphases ({name} tree), fresh interpreters: wall, cpu")
            for phase, values in table.items():
                print(f"  {phase:26} {_summary(values['wall']):22} {_summary(values['cpu'])}")
        if args.json is not None:
            args.json.write_text(
                json.dumps({"samples": [asdict(s) for s in samples], "phases": breakdown}, indent=1)
            )
        bad = [s for s in samples if not s.answer_ok or s.leftover_pids]
        return 1 if bad else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
