"""The manifest: TorchServe's JSON shape, lenient for old archives, strict where it matters."""

from __future__ import annotations

import json

import pytest

from torchwick.archiver import ArchiveError, Manifest, ModelSection
from torchwick.archiver.manifest import format_created_on, synthesized_manifest

TORCHSERVE_TEXT = """{
  "createdOn": "24/09/2024 09:41:17",
  "runtime": "python",
  "model": {
    "modelName": "resnet-18",
    "serializedFile": "resnet18-f37072fd.pth",
    "handler": "image_classifier",
    "modelFile": "model.py",
    "modelVersion": "1.0",
    "configFile": "model-config.yaml"
  },
  "archiverVersion": "0.12.0"
}"""


def test_torchserve_manifest_round_trips_to_identical_text() -> None:
    manifest = Manifest.from_json_bytes(TORCHSERVE_TEXT.encode())
    assert manifest.model.model_name == "resnet-18"
    assert manifest.model.config_file == "model-config.yaml"
    assert manifest.created_on == "24/09/2024 09:41:17"
    assert manifest.to_json() == TORCHSERVE_TEXT


def test_written_key_order_follows_torchserve() -> None:
    manifest = Manifest(
        runtime="python",
        archiver_version="0.12.0",
        created_on="01/01/2024 00:00:00",
        model=ModelSection(
            config_file="c.yaml",
            requirements_file="r.txt",
            model_version="2",
            handler="h.py:fn",
            model_file="m.py",
            serialized_file="w.pt",
            model_name="m",
            extensions="x",
        ),
    )
    data = manifest.to_json_dict()
    assert list(data) == ["createdOn", "runtime", "model", "archiverVersion"]
    assert list(data["model"]) == [
        "modelName",
        "serializedFile",
        "handler",
        "modelFile",
        "modelVersion",
        "extensions",
        "requirementsFile",
        "configFile",
    ]


def test_old_manifest_with_unknown_fields_is_kept_whole() -> None:
    old = {
        "runtime": "python",
        "model": {
            "modelName": "noop",
            "serializedFile": "model.pt",
            "handler": "service.py",
            "modelVersion": "1.11",
            "description": "kept",
        },
        "modelServerVersion": "1.0",
        "implementationVersion": "1.0",
        "specificationVersion": "1.0",
    }
    manifest = Manifest.from_json_bytes(json.dumps(old).encode())
    assert manifest.created_on is None and manifest.archiver_version is None
    assert manifest.to_json_dict() == old
    assert list(manifest.to_json_dict()) == list(old)


def test_numbers_become_text_as_in_torchserve() -> None:
    manifest = Manifest.from_json_bytes(b'{"model": {"modelName": "m", "modelVersion": 2.5}}')
    assert manifest.model.model_version == "2.5"
    assert manifest.runtime == "python"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"runtime": "python"}', "missing the 'model' object"),
        (b'{"runtime": "java", "model": {}}', "runtime"),
        (b'{"model": {"modelName": "../evil"}}', "model.modelName"),
        (b'{"model": {"handler": true}}', "model.handler"),
    ],
)
def test_bad_manifests_give_one_line_errors(text: bytes, fragment: str) -> None:
    with pytest.raises(ArchiveError) as caught:
        Manifest.from_json_bytes(text, where="x.mar: MAR-INF/MANIFEST.json")
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("x.mar: MAR-INF/MANIFEST.json")
    assert "\n" not in str(caught.value)


def test_created_on_uses_torchserve_format_in_utc() -> None:
    assert format_created_on(0) == "01/01/1970 00:00:00"
    assert format_created_on(1_727_170_877) == "24/09/2024 09:41:17"


def test_missing_manifest_is_assumed_like_torchserve() -> None:
    assumed = synthesized_manifest("resnet")
    assert assumed.model.model_name == "resnet"
    assert assumed.model.model_version == "1.0"
    assert assumed.runtime == "python"
    assert synthesized_manifest("bad name!").model.model_name is None
