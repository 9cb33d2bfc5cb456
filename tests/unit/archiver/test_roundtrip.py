"""Write each format, read it back; read TorchServe's own layout; byte-identical rebuilds."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from torchwick.archiver import (
    ArchiveError,
    ArchiveResult,
    archive_model,
    extract_archive,
    inspect_archive,
    read_manifest,
)

from .conftest import HANDLER_SOURCE, INPUT_MTIME, ModelInputs

FORMATS = ["default", "zip-store", "tgz", "no-archive"]
EXPECTED_FILES = {
    "MAR-INF/MANIFEST.json",
    "model.pt",
    "my_handler.py",
    "model.py",
    "model-config.yaml",
    "requirements.txt",
    "index_to_name.json",
    "sub/vocab.txt",
}


def _build(inputs: ModelInputs, export: Path, archive_format: str) -> ArchiveResult:
    return archive_model(
        model_name="tiny",
        version="1.0",
        handler=f"{inputs.handler}:handle",
        serialized_file=inputs.weights,
        model_file=inputs.model_file,
        extra_files=str(inputs.extra_dir),
        export_path=export,
        archive_format=archive_format,
        requirements_file=inputs.requirements,
        config_file=inputs.config,
    )


@pytest.mark.parametrize("archive_format", FORMATS)
def test_each_format_round_trips(tmp_path: Path, inputs: ModelInputs, archive_format: str) -> None:
    result = _build(inputs, tmp_path / "out", archive_format)
    suffix = {"default": ".mar", "zip-store": ".mar", "tgz": ".tar.gz", "no-archive": ""}
    assert result.path == tmp_path / "out" / f"tiny{suffix[archive_format]}"

    extracted = extract_archive(result.path, tmp_path / "model")
    files = {
        p.relative_to(extracted.root).as_posix() for p in extracted.root.rglob("*") if p.is_file()
    }
    assert files == EXPECTED_FILES
    assert (extracted.root / "model.pt").read_bytes() == inputs.weights.read_bytes()
    assert (extracted.root / "my_handler.py").read_text() == HANDLER_SOURCE
    assert extracted.manifest == result.manifest == read_manifest(result.path)
    assert extracted.manifest.model.handler == "my_handler.py:handle"
    assert extracted.config.batch_size == 4 and extracted.config.handler == {"scale": 2}
    if archive_format == "no-archive":
        assert extracted.root == result.path
        assert not (tmp_path / "model").exists()
    else:
        assert extracted.root == tmp_path / "model"
        assert (extracted.root / "MAR-INF").stat().st_mode & 0o777 == 0o755


def test_compression_matches_format(tmp_path: Path, inputs: ModelInputs) -> None:
    deflated = _build(inputs, tmp_path / "a", "default").path
    stored = _build(inputs, tmp_path / "b", "zip-store").path
    with zipfile.ZipFile(deflated) as a, zipfile.ZipFile(stored) as b:
        assert {i.compress_type for i in a.infolist()} == {zipfile.ZIP_DEFLATED}
        assert {i.compress_type for i in b.infolist()} == {zipfile.ZIP_STORED}


def test_tgz_has_one_top_level_folder(tmp_path: Path, inputs: ModelInputs) -> None:
    import tarfile

    path = _build(inputs, tmp_path, "tgz").path
    with tarfile.open(path) as archive:
        names = archive.getnames()
    assert {name.split("/")[0] for name in names} == {"tiny"}
    assert "tiny/MAR-INF/MANIFEST.json" in names


@pytest.mark.parametrize("archive_format", FORMATS)
def test_same_inputs_give_identical_bytes(
    tmp_path: Path, inputs: ModelInputs, archive_format: str
) -> None:
    first = _build(inputs, tmp_path / "one", archive_format)
    # Copies with the same content and mtimes, in another place, give the same archive.
    second = _build(inputs, tmp_path / "two", archive_format)
    assert first.sha256 == second.sha256
    if archive_format != "no-archive":
        assert first.path.read_bytes() == second.path.read_bytes()
        assert hashlib.sha256(first.path.read_bytes()).hexdigest() == first.sha256


def test_created_on_follows_source_date_epoch_then_newest_input(
    tmp_path: Path, inputs: ModelInputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = _build(inputs, tmp_path / "a", "default")
    assert plain.manifest.created_on == "14/11/2023 22:13:20"  # INPUT_MTIME in UTC
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1727170877")
    pinned = _build(inputs, tmp_path / "b", "default")
    assert pinned.manifest.created_on == "24/09/2024 09:41:17"
    with zipfile.ZipFile(pinned.path) as archive:
        assert {i.date_time for i in archive.infolist()} == {(2024, 9, 24, 9, 41, 16)}
    os.utime(inputs.weights, (INPUT_MTIME + 100, INPUT_MTIME + 100))
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    newer = _build(inputs, tmp_path / "c", "default")
    assert newer.manifest.created_on == "14/11/2023 22:15:00"
    assert newer.sha256 != plain.sha256


def test_bad_source_date_epoch(
    tmp_path: Path, inputs: ModelInputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ArchiveError, match="SOURCE_DATE_EPOCH"):
        _build(inputs, tmp_path, "default")
    assert list(tmp_path.iterdir()) == [inputs.root]


def test_reads_archive_laid_out_like_torch_model_archiver(
    tmp_path: Path, inputs: ModelInputs
) -> None:
    # torch-model-archiver 0.12 copies the artifacts into a folder, zips them with
    # ZipFile.write in os.walk order, then adds the manifest last with writestr.
    staging = tmp_path / "staging"
    staging.mkdir()
    for source in (inputs.weights, inputs.handler, inputs.config):
        (staging / source.name).write_bytes(source.read_bytes())
    manifest = {
        "createdOn": datetime.now().strftime("%d/%m/%Y %H:%M:%S"),
        "runtime": "python",
        "model": {
            "modelName": "tsmodel",
            "serializedFile": "model.pt",
            "handler": "my_handler",
            "modelVersion": "1.0",
            "configFile": "model-config.yaml",
        },
        "archiverVersion": "0.12.0",
    }
    text = json.dumps(manifest, indent=2)
    mar = tmp_path / "tsmodel.mar"
    with zipfile.ZipFile(mar, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder, _dirs, files in os.walk(staging):
            for name in files:
                full = os.path.join(folder, name)
                archive.write(full, os.path.relpath(full, staging))
        archive.writestr(os.path.join("MAR-INF", "MANIFEST.json"), text)

    assert read_manifest(mar).to_json() == text
    extracted = extract_archive(mar, tmp_path / "x")
    assert extracted.manifest.to_json_dict() == manifest
    assert extracted.config.min_workers == 1
    assert sorted(p.name for p in extracted.root.iterdir()) == [
        "MAR-INF",
        "model-config.yaml",
        "model.pt",
        "my_handler.py",
    ]


def test_archive_without_manifest_is_accepted(tmp_path: Path) -> None:
    mar = tmp_path / "bare.mar"
    with zipfile.ZipFile(mar, "w") as archive:
        archive.writestr("handler.py", HANDLER_SOURCE)
    contents = inspect_archive(mar)
    assert not contents.manifest_found
    assert contents.manifest.model.model_name == "bare"
    assert contents.manifest.model.model_version == "1.0"
    assert extract_archive(mar, tmp_path / "x").manifest == contents.manifest


def test_destination_rules(tmp_path: Path, inputs: ModelInputs) -> None:
    mar = _build(inputs, tmp_path, "default").path
    (tmp_path / "empty").mkdir()
    assert extract_archive(mar, tmp_path / "empty").root == tmp_path / "empty"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep").write_text("x")
    with pytest.raises(ArchiveError, match="not empty"):
        extract_archive(mar, busy)
    assert [p.name for p in busy.iterdir()] == ["keep"]


def test_config_named_in_manifest_must_exist(tmp_path: Path) -> None:
    mar = tmp_path / "m.mar"
    with zipfile.ZipFile(mar, "w") as archive:
        archive.writestr(
            "MAR-INF/MANIFEST.json", '{"model": {"modelName": "m", "configFile": "c.yaml"}}'
        )
    with pytest.raises(ArchiveError, match=r"configFile 'c\.yaml' is not in the archive"):
        read_manifest(mar)


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mar"
    junk.write_bytes(b"hello")
    with pytest.raises(ArchiveError, match="not a model archive"):
        read_manifest(junk)
    with pytest.raises(ArchiveError, match="not found"):
        read_manifest(tmp_path / "missing.mar")
