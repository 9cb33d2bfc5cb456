"""Registration precedence: API > yaml > models= JSON > defaults, as TorchServe resolves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from torchwick.archiver import ModelConfig
from torchwick.server.config import CliOptions, ConfigError, load_settings
from torchwick.server.errors import BadRequest
from torchwick.server.registry import ModelVersionConfig, RegisterRequest, resolve_version_config
from torchwick.server.registry.startup import (
    default_model_name,
    parse_load_models,
    startup_workers,
)
from torchwick.server.settings import Settings


def spec(
    request: RegisterRequest | None = None,
    yaml: ModelConfig | None = None,
    *,
    has_config_file: bool = False,
    settings: Settings | None = None,
    startup: int | None = None,
    runtime: str = "python",
) -> ModelVersionConfig:
    return resolve_version_config(
        request=request or RegisterRequest("m.mar"),
        name="m",
        version="1.0",
        mar_name="m.mar",
        manifest_runtime=runtime,
        handler="h.py",
        model_dir="/work/m",
        manifest={"runtime": runtime, "model": {"modelName": "m"}},
        yaml=yaml or ModelConfig(),
        has_config_file=has_config_file or yaml is not None,
        settings=settings or Settings(),
        startup_workers=startup,
    )


def json_settings(**entry: Any) -> Settings:
    return Settings(models={"m": {"1.0": entry}})


def test_defaults() -> None:
    s = spec()
    assert (s.batch_size, s.max_batch_delay) == (1, 100)
    assert (s.response_timeout, s.startup_timeout) == (120, 120)
    assert (s.min_workers, s.max_workers) == (0, 0)
    assert s.job_queue_size == 100
    assert s.device_type == "auto"
    assert not s.loaded_at_startup


def test_batch_settings_api_then_yaml_then_json() -> None:
    yaml = ModelConfig(batch_size=4, max_batch_delay=20)
    settings = json_settings(batchSize=8, maxBatchDelay=50)
    api = RegisterRequest("m.mar", batch_size=2, max_batch_delay=0)
    assert (spec(api, yaml, settings=settings).batch_size, spec(api, yaml).max_batch_delay) == (
        2,
        0,
    )
    assert spec(None, yaml, settings=settings).batch_size == 4
    assert spec(None, yaml, settings=settings).max_batch_delay == 20
    assert spec(None, ModelConfig(), settings=settings).batch_size == 8
    assert spec(None, ModelConfig(), settings=settings).max_batch_delay == 50
    # Values <= 0 in the yaml or JSON are ignored; a negative API value means "not given".
    assert spec(RegisterRequest("m.mar", batch_size=-1), ModelConfig(batch_size=0)).batch_size == 1


def test_timeouts_yaml_wins_when_set_else_json_else_api() -> None:
    api = RegisterRequest("m.mar", response_timeout=30, startup_timeout=40)
    yaml = ModelConfig(response_timeout=300)
    s = spec(api, yaml, settings=json_settings(startupTimeout=77))
    assert (s.response_timeout, s.startup_timeout) == (300, 77)
    s = spec(api)
    assert (s.response_timeout, s.startup_timeout) == (30, 40)
    s = spec(None, settings=Settings(default_response_timeout=5, default_startup_timeout=6))
    assert (s.response_timeout, s.startup_timeout) == (5, 6)


def test_non_positive_api_timeout_is_refused() -> None:
    with pytest.raises(BadRequest, match="startup_timeout"):
        spec(RegisterRequest("m.mar", startup_timeout=0))


def test_workers_initial_then_default_then_yaml() -> None:
    assert spec(RegisterRequest("m.mar", initial_workers=3)).min_workers == 3
    assert spec(RegisterRequest("m.mar", initial_workers=-2)).min_workers == 0
    assert spec(settings=Settings(default_workers_per_model=2)).max_workers == 2
    yaml = ModelConfig(min_workers=2, max_workers=5)
    s = spec(RegisterRequest("m.mar", initial_workers=1), yaml)
    assert (s.min_workers, s.max_workers) == (2, 5)
    # An incomplete yaml pair does not override.
    assert (
        spec(RegisterRequest("m.mar", initial_workers=1), ModelConfig(min_workers=2)).min_workers
        == 1
    )


def test_startup_workers_and_json_overrides() -> None:
    s = spec(startup=2)
    assert (s.min_workers, s.max_workers, s.loaded_at_startup) == (2, 2, True)
    s = spec(startup=2, settings=json_settings(minWorkers=3, maxWorkers=6))
    assert (s.min_workers, s.max_workers) == (3, 6)
    s = spec(startup=2, yaml=ModelConfig(min_workers=1, max_workers=1))
    assert (s.min_workers, s.max_workers) == (1, 1)


def test_a_version_restored_from_a_snapshot_keeps_its_worker_counts_even_zero() -> None:
    from torchwick.server.config.models_json import parse_models_json

    raw = '{"m": {"1.0": {"minWorkers": 0, "maxWorkers": 0, "batchSize": 0}}}'
    # From config.properties, 0 means "not set" (TorchServe's rule) ...
    plain, _ = parse_models_json("models", raw)
    assert dict(plain["m"]["1.0"]) == {}
    # ... from a snapshot it is a version that was scaled to zero.
    restored, _ = parse_models_json("models", raw, zero_workers=True)
    assert dict(restored["m"]["1.0"]) == {"minWorkers": 0, "maxWorkers": 0}
    settings = Settings(models=restored, restore_models=(("m", "m.mar"),))
    yaml = ModelConfig(min_workers=2, max_workers=2)
    s = spec(startup=1, settings=settings, yaml=yaml)
    assert (s.min_workers, s.max_workers) == (0, 0)
    # Not a restored model: the yaml still wins over the models= JSON.
    s = spec(startup=1, settings=Settings(models=restored), yaml=yaml)
    assert (s.min_workers, s.max_workers) == (2, 2)


def test_yaml_queue_and_device_settings() -> None:
    yaml = ModelConfig(job_queue_size=7, device_type="gpu", device_ids=(1,), parallel_level=2)
    s = spec(None, yaml)
    assert (s.job_queue_size, s.device_type, s.device_ids, s.parallel_level) == (7, "gpu", (1,), 2)


def test_worker_facing_fields_come_from_the_archive_and_server_settings() -> None:
    yaml = ModelConfig(batch_size=4, raw={"batchSize": 4, "handler": {"k": "v"}})
    settings = Settings(
        max_response_size=999,
        limit_max_image_pixels=False,
        decode_input_request=False,
        service_envelope="json",
    )
    s = spec(None, yaml, settings=settings)
    assert (s.model_dir, s.handler) == ("/work/m", "h.py")
    assert s.manifest == {"runtime": "python", "model": {"modelName": "m"}}
    assert s.yaml_config == {"batchSize": 4, "handler": {"k": "v"}}
    assert (s.max_response_size, s.limit_max_image_pixels, s.decode_input_request) == (
        999,
        False,
        False,
    )
    assert s.service_envelope == "json"
    # The LOAD frame is derived from it: the same values plus the worker's placement.
    load = s.load_spec(gpu_id=0, threads=2, adaptive_threads=False)
    assert (load.model_name, load.model_version, load.model_dir, load.handler) == (
        "m",
        "1.0",
        "/work/m",
        "h.py",
    )
    assert (load.batch_size, load.gpu_id, load.threads, load.adaptive_threads) == (4, 0, 2, False)
    assert load.model_yaml_config == {"batchSize": 4, "handler": {"k": "v"}}
    assert type(load.manifest) is dict and type(load.model_yaml_config) is dict
    assert (load.max_response_size, load.service_envelope) == (999, "json")
    assert (load.limit_max_image_pixels, load.decode_input_request) == (False, False)


def test_runtime_validation() -> None:
    assert spec(RegisterRequest("m.mar", runtime="python3")).runtime == "python3"
    with pytest.raises(BadRequest, match="Invalid RuntimeType value: java"):
        spec(RegisterRequest("m.mar", runtime="java"))
    with pytest.raises(BadRequest, match="not supported"):
        spec(runtime="LSP")


def test_default_model_names() -> None:
    assert default_model_name("resnet-18.mar") == "resnet_18"
    assert default_model_name("https://x/y/my.model.tar.gz") == "my_model"
    assert default_model_name("dir/") == "dir"


def test_parse_load_models() -> None:
    models = parse_load_models(
        ["all", "b=x.mar,c.mar", " ", "named=https://h/z.mar"], lambda: ["a.mar", "b.tgz"]
    )
    assert [(m.name, m.url) for m in models] == [
        ("a", "a.mar"),
        ("b", "b.tgz"),
        ("c", "c.mar"),
        ("named", "https://h/z.mar"),
    ]


def test_startup_worker_count() -> None:
    assert startup_workers(3, 8, 64) == 3
    assert startup_workers(0, 2, 64) == 2
    assert startup_workers(0, 0, 64) == 4
    assert startup_workers(0, 0, 1) == 1


def test_model_config_may_choose_the_service_envelope() -> None:
    from torchwick.server.errors import BadRequest
    from torchwick.server.registry.precedence import model_envelope

    assert model_envelope({}) is None
    assert model_envelope({"service_envelope": "KServeV2"}) == "kservev2"
    with pytest.raises(BadRequest, match="service_envelope"):
        model_envelope({"service_envelope": "soap"})


def test_shared_memory_settings_reach_the_load_frame(tmp_path: Path) -> None:
    (tmp_path / "config.properties").write_text("ipc_shm_threshold=4096\nipc_shm_size=1048576\n")
    settings = load_settings(CliOptions(), {}, tmp_path)
    assert (settings.ipc_shm_threshold, settings.ipc_shm_size) == (4096, 1048576)
    load = spec(settings=settings).load_spec(gpu_id=None, threads=1, adaptive_threads=False)
    assert (load.shm_threshold, load.shm_size) == (4096, 1048576)
    # On by default (256 KiB, 64 MiB arenas); 0 turns it off; a negative size is refused.
    default = spec().load_spec(gpu_id=None, threads=1, adaptive_threads=False)
    assert (default.shm_threshold, default.shm_size) == (256 * 1024, 64 * 1024 * 1024)
    (tmp_path / "config.properties").write_text("ipc_shm_threshold=0\n")
    off = spec(settings=load_settings(CliOptions(), {}, tmp_path))
    assert off.load_spec(gpu_id=None, threads=1, adaptive_threads=False).shm_threshold == 0
    (tmp_path / "config.properties").write_text("ipc_shm_size=-1\n")
    with pytest.raises(ConfigError, match="ipc_shm_size"):
        load_settings(CliOptions(), {}, tmp_path)
