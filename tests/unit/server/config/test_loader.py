"""Settings loading: file lookup, precedence, validation and startup warnings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from torchwick.server.config import (
    CliOptions,
    ConfigError,
    load_settings,
    log_startup_warnings,
    startup_warnings,
)
from torchwick.server.settings import DEFAULT_ALLOWED_URLS, Settings


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path: Path) -> Path:
    directory = tmp_path / "store"
    directory.mkdir()
    return directory


def test_defaults_without_any_file(tmp_path: Path) -> None:
    settings = load_settings(CliOptions(), {}, tmp_path)
    defaults = Settings()
    assert settings.config_file is None
    assert settings.inference_address == defaults.inference_address
    assert settings.job_queue_size == defaults.job_queue_size
    assert settings.disable_token_authorization is False
    assert settings.enable_model_api is False
    assert settings.key_file == tmp_path / "key_file.json"
    assert settings.log_location == tmp_path / "logs"
    assert settings.unknown_keys == ()


def test_config_file_lookup_order(tmp_path: Path) -> None:
    local = write(tmp_path / "config.properties", "job_queue_size=1\n")
    flag = write(tmp_path / "flag.properties", "job_queue_size=2\n")
    env = write(tmp_path / "env.properties", "job_queue_size=3\n")
    assert load_settings(CliOptions(), {}, tmp_path).config_file == local
    by_flag = load_settings(CliOptions(ts_config=Path("flag.properties")), {}, tmp_path)
    assert (by_flag.config_file, by_flag.job_queue_size) == (flag, 2)
    by_env = load_settings(
        CliOptions(ts_config=Path("flag.properties")), {"TS_CONFIG_FILE": str(env)}, tmp_path
    )
    assert (by_env.config_file, by_env.job_queue_size) == (env, 3)


def test_missing_named_config_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--ts-config: .* does not exist"):
        load_settings(CliOptions(ts_config=Path("nope")), {}, tmp_path)
    with pytest.raises(ConfigError, match=r"^TS_CONFIG_FILE: .* does not exist"):
        load_settings(CliOptions(), {"TS_CONFIG_FILE": "nope"}, tmp_path)


def test_ts_env_only_when_enabled(tmp_path: Path) -> None:
    write(tmp_path / "config.properties", "job_queue_size=5\n")
    environ = {"TS_JOB_QUEUE_SIZE": "6"}
    assert load_settings(CliOptions(), environ, tmp_path).job_queue_size == 5
    write(tmp_path / "config.properties", "job_queue_size=5\nenable_envvars_config=true\n")
    assert load_settings(CliOptions(), environ, tmp_path).job_queue_size == 6


def test_torchwick_env_beats_ts_env(tmp_path: Path) -> None:
    write(tmp_path / "config.properties", "enable_envvars_config=true\njob_queue_size=5\n")
    environ = {"TS_JOB_QUEUE_SIZE": "6", "TORCHWICK_JOB_QUEUE_SIZE": "7"}
    assert load_settings(CliOptions(), environ, tmp_path).job_queue_size == 7


def test_allowed_urls_env_needs_its_own_switch(tmp_path: Path) -> None:
    environ = {"TS_ALLOWED_URLS": "https://models\\.example/.*"}
    write(tmp_path / "config.properties", "enable_envvars_config=true\n")
    assert load_settings(CliOptions(), environ, tmp_path).allowed_urls == DEFAULT_ALLOWED_URLS
    write(tmp_path / "config.properties", "enable_envvars_config=true\nuse_env_allowed_urls=true\n")
    assert load_settings(CliOptions(), environ, tmp_path).allowed_urls == (
        "https://models\\.example/.*",
    )


def test_cli_beats_file_and_env(tmp_path: Path, store: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    write(
        tmp_path / "config.properties",
        f"enable_envvars_config=true\nmodel_store={other}\nload_models=a.mar\n",
    )
    environ = {"TS_MODEL_STORE": str(other), "TS_LOAD_MODELS": "b.mar"}
    options = CliOptions(model_store=Path("store"), models=("x=x.mar,y.mar", "all"))
    settings = load_settings(options, environ, tmp_path)
    assert settings.model_store == store
    assert settings.load_models == ("x=x.mar", "y.mar", "all")


def test_cli_switches_only_turn_on(tmp_path: Path) -> None:
    write(tmp_path / "config.properties", "enable_model_api=true\n")
    settings = load_settings(CliOptions(enable_model_api=False), {}, tmp_path)
    assert settings.enable_model_api is True
    flags = CliOptions(disable_token_auth=True, enable_model_api=True, no_config_snapshots=True)
    write(tmp_path / "config.properties", "disable_token_authorization=false\n")
    settings = load_settings(flags, {}, tmp_path)
    assert settings.disable_token_authorization is True
    assert settings.enable_model_api is True
    assert settings.snapshots_enabled is False


def test_values_are_typed(tmp_path: Path, store: Path) -> None:
    write(
        tmp_path / "config.properties",
        "\n".join(
            [
                "inference_address=http://0.0.0.0:9080",
                "management_address=unix:/tmp/mgmt.sock",
                "model_store=store",
                "load_models=a.mar, b=b.mar ,",
                "default_workers_per_model=2",
                "number_of_gpu=0",
                "token_expiration_min=0.25",
                "decode_input_request=FALSE",
                "allowed_urls=https://s3\\\\.example\\\\.com/.*,file:///models/.*",
                "service_envelope=kservev2",
                "metrics_mode=log",
                "cors_allowed_origin=*",
                "worker_threads=4",
                "worker_heartbeat_s=2.5",
                "number_of_netty_threads=32",
                "vmargs=-Xmx4g",
            ]
        ),
    )
    settings = load_settings(CliOptions(), {}, tmp_path)
    assert settings.inference_address == "http://0.0.0.0:9080"
    assert settings.management_address == "unix:/tmp/mgmt.sock"
    assert settings.model_store == store
    assert settings.load_models == ("a.mar", "b=b.mar")
    assert settings.default_workers_per_model == 2
    assert settings.number_of_gpu == 0
    assert settings.token_expiration_min == 0.25
    assert settings.decode_input_request is False
    assert settings.allowed_urls == ("https://s3\\.example\\.com/.*", "file:///models/.*")
    assert settings.service_envelope == "kservev2"
    assert settings.metrics_mode == "log"
    assert settings.cors_allowed_origin == "*"
    assert (settings.worker_threads, settings.worker_heartbeat_s) == (4, 2.5)
    assert settings.unknown_keys == ()


def test_models_json(tmp_path: Path) -> None:
    write(
        tmp_path / "config.properties",
        'models={"resnet": {"1.0": {"minWorkers": 2, "batchSize": 0, "marName": "r.mar",\\\n'
        '  "defaultVersion": true, "minworkers": 9}}}\n',
    )
    settings = load_settings(CliOptions(), {}, tmp_path)
    assert dict(settings.models["resnet"]["1.0"]) == {
        "minWorkers": 2,
        "marName": "r.mar",
        "defaultVersion": True,
    }
    assert settings.unknown_keys == ("models.resnet.1.0.minworkers",)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("job_queue_size=many", r"^job_queue_size: expected an integer, got 'many'"),
        ("job_queue_size=0", r"^job_queue_size: must be at least 1"),
        ("inference_address=localhost:8080", r"^inference_address: 'localhost:8080' is not"),
        ("enable_model_api=sure", r"^enable_model_api: expected true or false"),
        ("token_expiration_min=-1", r"^token_expiration_min: must be a positive"),
        ("allowed_urls=(unclosed", r"^allowed_urls: '\(unclosed' is not a valid regex"),
        ("metrics_mode=csv", r"^metrics_mode: expected one of log, prometheus, legacy"),
        ("models={not json", r"^models: not valid JSON"),
        ('models={"m": {"1": {"minWorkers": "x"}}}', r"^models\.m\.1\.minWorkers: "),
        ("model_store=missing", r"^model_store: .*missing is not an existing directory"),
        ("certificate_file=nope.pem", r"^certificate_file: file .* does not exist"),
        ("model_store=$$UNSET_VAR$$", r"^model_store: .*UNSET_VAR.*not set"),
    ],
)
def test_validation_errors_name_the_key(tmp_path: Path, line: str, message: str) -> None:
    config = write(tmp_path / "config.properties", line + "\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(CliOptions(), {}, tmp_path)
    if "$$" not in line and "model_store" not in line and "certificate" not in line:
        assert str(config) in str(caught.value)


def test_env_errors_name_the_variable(tmp_path: Path) -> None:
    write(tmp_path / "config.properties", "enable_envvars_config=true\n")
    with pytest.raises(ConfigError, match=r"environment variable TS_JOB_QUEUE_SIZE"):
        load_settings(CliOptions(), {"TS_JOB_QUEUE_SIZE": "lots"}, tmp_path)


def test_env_reference_substitution(tmp_path: Path, store: Path) -> None:
    write(tmp_path / "config.properties", "model_store=$$STORE_DIR$$\n")
    settings = load_settings(CliOptions(), {"STORE_DIR": str(store)}, tmp_path)
    assert settings.model_store == store


def test_https_needs_key_and_certificate(tmp_path: Path) -> None:
    write(tmp_path / "config.properties", "inference_address=https://127.0.0.1:8443\n")
    with pytest.raises(ConfigError, match=r"^inference_address: https needs"):
        load_settings(CliOptions(), {}, tmp_path)
    write(tmp_path / "key.pem", "k")
    write(tmp_path / "config.properties", "private_key_file=key.pem\n")
    with pytest.raises(ConfigError, match=r"set both"):
        load_settings(CliOptions(), {}, tmp_path)
    write(tmp_path / "cert.pem", "c")
    write(
        tmp_path / "config.properties",
        "inference_address=https://127.0.0.1:8443\nprivate_key_file=key.pem\n"
        "certificate_file=cert.pem\n",
    )
    settings = load_settings(CliOptions(), {}, tmp_path)
    assert settings.certificate_file == tmp_path / "cert.pem"


def test_log_locations_come_from_env(tmp_path: Path) -> None:
    settings = load_settings(CliOptions(), {"LOG_LOCATION": "/var/log/tw"}, tmp_path)
    assert settings.log_location == Path("/var/log/tw")
    assert settings.metrics_location == tmp_path / "logs"


def test_process_environment_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHWICK_JOB_QUEUE_SIZE", "7")
    monkeypatch.setenv("TS_CONFIG_FILE", str(tmp_path / "absent"))
    assert load_settings(CliOptions(), {}, tmp_path).job_queue_size == 100


def test_unknown_keys_are_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(
        tmp_path / "config.properties",
        "inferance_address=http://x:1\nnumber_of_netty_threads=4\nmystery=1\n"
        "allowed_urls=file:///models/.*\n",
    )
    settings = load_settings(CliOptions(), {}, tmp_path)
    assert settings.unknown_keys == ("inferance_address", "mystery")
    with caplog.at_level(logging.WARNING, logger="torchwick.config"):
        log_startup_warnings(settings)
    unknown = [r for r in caplog.records if "does not know" in r.getMessage()]
    assert len(unknown) == 1
    assert "inferance_address, mystery" in unknown[0].getMessage()
    assert "number_of_netty_threads" not in unknown[0].getMessage()
    assert not any("allowed_urls" in r.getMessage() for r in caplog.records)


def test_permissive_allowed_urls_and_disabled_tokens_are_warned(tmp_path: Path) -> None:
    settings = load_settings(CliOptions(disable_token_auth=True), {}, tmp_path)
    warnings = startup_warnings(settings)
    assert len(warnings) == 2
    assert "allowed_urls" in warnings[0]
    assert "token authorization is disabled" in warnings[1]
