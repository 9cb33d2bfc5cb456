"""Archive interop with real TorchServe 0.12.0, both ways.

(a) Archives written by the real ``torch-model-archiver`` 0.12.0 open in torchwick with the same
    manifest and files.
(b) Archives written by torchwick, in all four formats, are registered by the real TorchServe
    0.12.0 and answer a prediction computed from the archived weights and model-config.

Needs the TorchServe venv built by ``benchmarks/torchserve_env.sh`` (``$TORCHSERVE_VENV``,
default ``/work/tsvenv``) and Java 17; skipped with the reason otherwise. A custom function
handler keeps torchvision out of it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from torchwick.archiver import archive_model, extract_archive, inspect_archive, read_manifest

pytestmark = [pytest.mark.torchserve, pytest.mark.slow, pytest.mark.timeout(420)]

VENV = Path(os.environ.get("TORCHSERVE_VENV", "/work/tsvenv"))
TORCHSERVE = VENV / "bin" / "torchserve"
TS_ARCHIVER = VENV / "bin" / "torch-model-archiver"

if not (TORCHSERVE.exists() and TS_ARCHIVER.exists()):
    pytest.skip(
        f"TorchServe 0.12 venv not found at {VENV} (set TORCHSERVE_VENV or run "
        "benchmarks/torchserve_env.sh)",
        allow_module_level=True,
    )
if shutil.which("java") is None:
    pytest.skip("java is not installed; TorchServe's frontend needs it", allow_module_level=True)

# A function handler: TorchServe calls handle(None, context) once to initialise, then per batch.
HANDLER = """
import json
import os

import torch

_state = {}


def handle(data, context):
    if not _state:
        model_dir = context.system_properties["model_dir"]
        weights = os.path.join(model_dir, context.manifest["model"]["serializedFile"])
        _state["w"] = torch.load(weights, weights_only=True)["weight"]
        section = (context.model_yaml_config or {}).get("handler") or {}
        _state["scale"] = float(section.get("scale", 1))
    if data is None:
        return None
    answers = []
    for row in data:
        body = row.get("body") if row.get("body") is not None else row.get("data")
        if isinstance(body, (bytes, bytearray)):
            body = json.loads(body)
        x = torch.tensor(body["x"], dtype=torch.float32)
        answers.append({"y": (_state["w"] @ x * _state["scale"]).tolist()})
    return answers
"""
CONFIG = "minWorkers: 1\nmaxWorkers: 1\nbatchSize: 1\nresponseTimeout: 60\nhandler:\n  scale: 2\n"
WEIGHT = [[float(4 * r + c) for c in range(4)] for r in range(4)]
X = [1.0, 2.0, 3.0, 4.0]
EXPECTED = [2.0 * sum(w * x for w, x in zip(row, X, strict=True)) for row in WEIGHT]
FORMATS = {"default": ".mar", "zip-store": ".mar", "tgz": ".tar.gz", "no-archive": ""}


@pytest.fixture
def model_inputs(tmp_path: Path) -> dict[str, Path]:
    import torch

    folder = tmp_path / "inputs"
    folder.mkdir()
    torch.save({"weight": torch.tensor(WEIGHT)}, folder / "weights.pt")
    (folder / "tensor_handler.py").write_text(HANDLER)
    (folder / "model-config.yaml").write_text(CONFIG)
    (folder / "labels.json").write_text('{"0": "a"}\n')
    return {
        "weights": folder / "weights.pt",
        "handler": folder / "tensor_handler.py",
        "config": folder / "model-config.yaml",
        "extra": folder / "labels.json",
    }


def test_torchserve_archives_open_in_torchwick(
    tmp_path: Path, model_inputs: dict[str, Path]
) -> None:
    ts_out = tmp_path / "ts"
    ts_out.mkdir()
    for archive_format, suffix in FORMATS.items():
        name = f"ts_{archive_format.replace('-', '_')}"
        subprocess.run(
            [
                str(TS_ARCHIVER),
                "--model-name",
                name,
                "--version",
                "1.0",
                "--serialized-file",
                str(model_inputs["weights"]),
                "--handler",
                f"{model_inputs['handler']}".removesuffix(".py") + ":handle",
                "--extra-files",
                str(model_inputs["extra"]),
                "--config-file",
                str(model_inputs["config"]),
                "--export-path",
                str(ts_out),
                "--archive-format",
                archive_format,
            ],
            check=True,
            capture_output=True,
            timeout=120,
            # torch-model-archiver stages files in $TMPDIR/<model-name>: keep that private.
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )
        path = ts_out / f"{name}{suffix}"
        raw = _manifest_text(path, name, archive_format)
        manifest = read_manifest(path)
        assert manifest.to_json_dict() == json.loads(raw)
        assert manifest.to_json() == raw  # same keys, same order, same indentation
        mine = archive_model(
            model_name=name,
            version="1.0",
            serialized_file=model_inputs["weights"],
            handler=str(model_inputs["handler"]).removesuffix(".py") + ":handle",
            extra_files=str(model_inputs["extra"]),
            config_file=model_inputs["config"],
            export_path=tmp_path / "mine",
            archive_format=archive_format,
        )
        theirs = {k: v for k, v in manifest.to_json_dict().items() if k != "createdOn"}
        ours = {k: v for k, v in mine.manifest.to_json_dict().items() if k != "createdOn"}
        assert ours == theirs
        extracted = extract_archive(path, tmp_path / "x" / archive_format)
        files = sorted(
            p.relative_to(extracted.root).as_posix()
            for p in extracted.root.rglob("*")
            if p.is_file()
        )
        assert files == [
            "MAR-INF/MANIFEST.json",
            "labels.json",
            "model-config.yaml",
            "tensor_handler.py",
            "weights.pt",
        ]
        assert extracted.config.handler == {"scale": 2}
        assert inspect_archive(path).manifest_found


def _manifest_text(path: Path, name: str, archive_format: str) -> str:
    if archive_format in ("default", "zip-store"):
        with zipfile.ZipFile(path) as archive:
            return archive.read("MAR-INF/MANIFEST.json").decode()
    if archive_format == "tgz":
        import tarfile

        with tarfile.open(path) as archive:
            member = archive.extractfile(f"{name}/MAR-INF/MANIFEST.json")
            assert member is not None
            return member.read().decode()
    return (path / "MAR-INF" / "MANIFEST.json").read_text()


def test_torchwick_archives_are_served_by_torchserve(
    tmp_path: Path, model_inputs: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    names = {}
    for archive_format in FORMATS:
        name = f"tw_{archive_format.replace('-', '_')}"
        result = archive_model(
            model_name=name,
            version="1.0",
            serialized_file=model_inputs["weights"],
            handler=f"{model_inputs['handler']}:handle",
            extra_files=str(model_inputs["extra"]),
            config_file=model_inputs["config"],
            export_path=store,
            archive_format=archive_format,
        )
        names[name] = result.path.name
    with _TorchServe(tmp_path, store) as server:
        for name, url in names.items():
            status, body = server.call(
                "POST", server.management, f"/models?url={url}&initial_workers=1&synchronous=true"
            )
            assert status == 200, body
            status, body = server.call(
                "POST", server.inference, f"/predictions/{name}", json.dumps({"x": X}).encode()
            )
            assert status == 200, body
            assert json.loads(body) == {"y": EXPECTED}, body
            status, body = server.call("GET", server.management, f"/models/{name}")
            assert json.loads(body)[0]["modelVersion"] == "1.0"
            status, body = server.call("DELETE", server.management, f"/models/{name}")
            assert status == 200, body


class _TorchServe:
    """Real TorchServe on free ports, in a private working and temporary folder."""

    def __init__(self, root: Path, store: Path) -> None:
        self.root = root / "ts-run"
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True)
        ports = _free_ports(5)
        self.inference = f"http://127.0.0.1:{ports[0]}"
        self.management = f"http://127.0.0.1:{ports[1]}"
        config = self.root / "config.properties"
        config.write_text(
            f"inference_address={self.inference}\n"
            f"management_address={self.management}\n"
            f"metrics_address=http://127.0.0.1:{ports[2]}\n"
            f"grpc_inference_port={ports[3]}\n"
            f"grpc_management_port={ports[4]}\n"
            # Worker sockets are named after this port under java.io.tmpdir: keep both private.
            f"initial_worker_port={ports[0] + 1000 if ports[0] < 60000 else 21000}\n"
            f"vmargs=-Xmx512m -Djava.io.tmpdir={self.tmp}\n"
            "disable_system_metrics=true\n"
        )
        self.env = {
            **os.environ,
            "TMPDIR": str(self.tmp),
            "OMP_NUM_THREADS": "1",
            "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}",
        }
        self.command = [
            str(TORCHSERVE),
            "--start",
            "--ncs",
            "--model-store",
            str(store),
            "--ts-config",
            str(config),
            "--disable-token-auth",
            "--enable-model-api",
        ]
        self.pid: int | None = None

    def __enter__(self) -> _TorchServe:
        subprocess.run(
            self.command,
            cwd=self.root,
            env=self.env,
            check=True,
            timeout=60,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pid_file = self.tmp / ".model_server.pid"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.pid is None and pid_file.exists():
                self.pid = int(pid_file.read_text().strip())
            try:
                if self.call("GET", self.inference, "/ping")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise AssertionError(f"TorchServe did not answer /ping; see {self.root / 'logs'}")

    def __exit__(self, *_exc: object) -> None:
        subprocess.run(
            [str(TORCHSERVE), "--stop"],
            cwd=self.root,
            env=self.env,
            timeout=60,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if self.pid is None:
            return
        # torchserve --stop returns before the JVM has exited: wait for the process itself.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.kill(self.pid, signal.SIGKILL)

    def call(self, method: str, base: str, path: str, body: bytes | None = None) -> tuple[int, str]:
        request = urllib.request.Request(base + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
