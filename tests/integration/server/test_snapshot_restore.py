"""A real restart from a config snapshot keeps each version's worker counts, zero included."""

from __future__ import annotations

from pathlib import Path

from tests.integration.server import model_handlers as handlers
from tests.support.server import ServerOptions, build_archive, running_server
from torchwick.server.config.properties import parse_properties


def test_a_version_scaled_to_zero_comes_back_with_zero_workers(tmp_path: Path) -> None:
    first = tmp_path / "first"
    build_archive(first / "model_store", "echo", handlers.ECHO)
    build_archive(first / "model_store", "kept", handlers.ECHO)
    with running_server(first, ServerOptions(enable_model_api=True)) as server:
        mgmt = server.client("management", timeout=120.0)
        for name in ("echo", "kept"):
            params = {"url": f"{name}.mar", "initial_workers": "1", "synchronous": "true"}
            assert mgmt.post("/models", params=params).status_code == 200
        scaled = mgmt.put("/models/echo", params={"min_worker": "0", "synchronous": "true"})
        assert scaled.status_code == 200, scaled.text
        assert mgmt.get("/models/echo").json()[0]["workers"] == []
        snapshots = server.workdir / "logs" / "config"
    (shutdown,) = [p for p in snapshots.iterdir() if p.name.endswith("-shutdown.cfg")]
    values = parse_properties(shutdown.read_text(encoding="utf-8"), source="snapshot")

    second = tmp_path / "second"
    (second / "model_store").mkdir(parents=True)
    for archive in (first / "model_store").glob("*.mar"):
        (second / "model_store" / archive.name).write_bytes(archive.read_bytes())
    options = ServerOptions(config={"model_snapshot": values["model_snapshot"]})
    with running_server(second, options) as server:
        mgmt = server.client("management")
        echo = mgmt.get("/models/echo").json()[0]
        assert (echo["minWorkers"], echo["maxWorkers"], echo["workers"]) == (0, 0, [])
        kept = mgmt.get("/models/kept").json()[0]
        assert (kept["minWorkers"], len(kept["workers"])) == (1, 1)
