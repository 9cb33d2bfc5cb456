"""model-config.yaml: typed keys, the free handler section, clear errors for wrong types."""

from __future__ import annotations

import pytest

from torchwick.archiver import ArchiveError, ModelConfig, parse_model_config


def test_all_typed_keys() -> None:
    config = parse_model_config(
        "minWorkers: 1\nmaxWorkers: 3\nbatchSize: 8\nmaxBatchDelay: 20\nresponseTimeout: 30\n"
        "startupTimeout: 60\njobQueueSize: 50\nparallelLevel: 2\ndeviceType: GPU\n"
        "deviceIds: [0, 1]\nparallelType: tp\nhandler:\n  profile: true\ntorchrun:\n  nnodes: 1\n"
    )
    assert config == ModelConfig(
        min_workers=1,
        max_workers=3,
        batch_size=8,
        max_batch_delay=20,
        response_timeout=30,
        startup_timeout=60,
        job_queue_size=50,
        parallel_level=2,
        device_type="gpu",
        device_ids=(0, 1),
        parallel_type="tp",
        handler={"profile": True},
        raw=config.raw,
    )
    assert config.raw["torchrun"] == {"nnodes": 1}


def test_empty_document_and_empty_values() -> None:
    assert parse_model_config("") == ModelConfig()
    config = parse_model_config("parallelType: ''\nhandler:\n")
    assert config.parallel_type is None and config.handler == {}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("minWorkers: two", "minWorkers must be a non-negative integer"),
        ("batchSize: true", "batchSize must be a non-negative integer"),
        ("maxBatchDelay: -1", "maxBatchDelay must be a non-negative integer"),
        ("responseTimeout: 1.5", "responseTimeout must be"),
        ("deviceType: tpu", "deviceType must be cpu or gpu"),
        ("deviceIds: [0, x]", "deviceIds must be a list"),
        ("parallelType: zz", "parallelType must be one of"),
        ("handler: [1]", "handler must be a mapping"),
        ("- a\n- b", "top level must be a mapping"),
        ("a: [unclosed", "not valid YAML"),
        ("minWorkers: 3\nmaxWorkers: 1", "maxWorkers (1) is below minWorkers (3)"),
    ],
)
def test_wrong_types_are_clear_errors(text: str, fragment: str) -> None:
    with pytest.raises(ArchiveError) as caught:
        parse_model_config(text, where="m.mar: model-config.yaml")
    message = str(caught.value)
    assert fragment in message
    assert message.startswith("m.mar: model-config.yaml")
    assert "\n" not in message


def test_yaml_tags_are_not_executed() -> None:
    with pytest.raises(ArchiveError, match="not valid YAML"):
        parse_model_config("x: !!python/object/apply:os.system ['true']")
