"""archive_model's input rules: handlers, extra files, clashes, bad input leaves nothing behind."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from torchwick.archiver import (
    BUILTIN_HANDLERS,
    ArchiveError,
    ModelArchiver,
    ModelArchiverConfig,
    archive_model,
    read_manifest,
)

from .conftest import ModelInputs


def _names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        return set(archive.namelist())


@pytest.mark.parametrize("builtin", BUILTIN_HANDLERS)
def test_builtin_handler_is_named_not_copied(tmp_path: Path, builtin: str) -> None:
    result = archive_model(model_name="m", version="1", handler=builtin, export_path=tmp_path)
    assert result.manifest.model.handler == builtin
    assert _names(result.path) == {"MAR-INF/MANIFEST.json"}


@pytest.mark.parametrize(
    ("spec", "manifest_value"),
    [
        ("{dir}/my_handler.py", "my_handler.py"),
        ("{dir}/my_handler.py:handle", "my_handler.py:handle"),
        ("{dir}/my_handler", "my_handler"),  # TorchServe: a path without .py means path.py
        ("{dir}/my_handler:handle", "my_handler:handle"),
    ],
)
def test_handler_file_forms(
    tmp_path: Path, inputs: ModelInputs, spec: str, manifest_value: str
) -> None:
    handler = spec.format(dir=inputs.root)
    result = archive_model(model_name="m", version="1", handler=handler, export_path=tmp_path / "o")
    assert result.manifest.model.handler == manifest_value
    assert "my_handler.py" in _names(result.path)


@pytest.mark.parametrize("handler", ["missing_handler", "nope.py:handle", "x.py:"])
def test_bad_handler(tmp_path: Path, handler: str) -> None:
    with pytest.raises(ArchiveError, match="handler"):
        archive_model(model_name="m", version="1", handler=handler, export_path=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_extra_files_folders_globs_and_skips(tmp_path: Path, inputs: ModelInputs) -> None:
    (inputs.root / "labels_a.txt").write_text("a")
    (inputs.root / "labels_b.txt").write_text("b")
    result = archive_model(
        model_name="m",
        version="1",
        handler="base_handler",
        extra_files=f"{inputs.extra_dir}, {inputs.root}/labels_*.txt",
        export_path=tmp_path / "o",
    )
    assert _names(result.path) == {
        "MAR-INF/MANIFEST.json",
        "index_to_name.json",
        "sub/vocab.txt",
        "labels_a.txt",
        "labels_b.txt",
    }


def test_extra_files_as_list_and_unmatched_glob_warns(
    tmp_path: Path, inputs: ModelInputs, caplog: pytest.LogCaptureFixture
) -> None:
    result = archive_model(
        model_name="m",
        version="1",
        handler="base_handler",
        extra_files=[inputs.requirements, f"{inputs.root}/*.nothing"],
        export_path=tmp_path / "o",
    )
    assert "requirements.txt" in _names(result.path)
    assert "matched nothing" in caplog.text


def test_identical_duplicates_are_merged_and_different_ones_refused(
    tmp_path: Path, inputs: ModelInputs
) -> None:
    result = archive_model(
        model_name="m",
        version="1",
        handler=str(inputs.handler),
        extra_files=str(inputs.handler),
        export_path=tmp_path / "a",
    )
    assert "my_handler.py" in _names(result.path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "my_handler.py").write_text("different = True\n")
    with pytest.raises(ArchiveError, match=r"would both be stored as 'my_handler\.py'"):
        archive_model(
            model_name="m",
            version="1",
            handler=str(inputs.handler),
            extra_files=str(other / "my_handler.py"),
            export_path=tmp_path / "b",
        )
    assert not (tmp_path / "b").exists()


def test_reserved_manifest_folder(tmp_path: Path) -> None:
    extra = tmp_path / "extra" / "MAR-INF"
    extra.mkdir(parents=True)
    (extra / "MANIFEST.json").write_text("{}")
    with pytest.raises(ArchiveError, match="reserved"):
        archive_model(
            model_name="m",
            version="1",
            handler="base_handler",
            extra_files=str(tmp_path / "extra"),
            export_path=tmp_path / "o",
        )


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"model_name": "bad name"}, "model name 'bad name' is not allowed"),
        ({"model_name": "-leading"}, "is not allowed"),
        ({"version": ""}, "version is required"),
        ({"version": "1/2"}, "may not contain"),
        ({"runtime": "java"}, "unknown runtime"),
        ({"archive_format": "zip"}, "unknown archive format"),
        ({"serialized_file": "missing.pt"}, "serialized file not found"),
        ({"extra_files": "missing.txt"}, "extra file not found"),
    ],
)
def test_bad_input_is_refused_before_writing(
    tmp_path: Path, options: dict[str, str], fragment: str
) -> None:
    arguments = {
        "model_name": "m",
        "version": "1",
        "handler": "base_handler",
        "export_path": tmp_path / "o",
        **options,
    }
    with pytest.raises(ArchiveError) as caught:
        archive_model(**arguments)  # type: ignore[arg-type]
    assert fragment in str(caught.value)
    assert not (tmp_path / "o").exists()


def test_bad_config_file_is_refused(tmp_path: Path, inputs: ModelInputs) -> None:
    inputs.config.write_text("batchSize: many\n")
    with pytest.raises(ArchiveError, match="batchSize must be a non-negative integer"):
        archive_model(
            model_name="m",
            version="1",
            handler="base_handler",
            config_file=inputs.config,
            export_path=tmp_path / "o",
        )


def test_existing_output_needs_force(tmp_path: Path) -> None:
    first = archive_model(model_name="m", version="1", handler="base_handler", export_path=tmp_path)
    before = first.path.read_bytes()
    with pytest.raises(ArchiveError, match="already exists; pass -f/--force"):
        archive_model(model_name="m", version="2", handler="base_handler", export_path=tmp_path)
    assert first.path.read_bytes() == before
    second = archive_model(
        model_name="m", version="2", handler="base_handler", export_path=tmp_path, force=True
    )
    assert read_manifest(second.path).model.model_version == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mar"]


def test_force_replaces_a_no_archive_folder(tmp_path: Path) -> None:
    archive_model(
        model_name="m",
        version="1",
        handler="base_handler",
        export_path=tmp_path,
        archive_format="no-archive",
    )
    (tmp_path / "m" / "stale.txt").write_text("old")
    archive_model(
        model_name="m",
        version="2",
        handler="base_handler",
        export_path=tmp_path,
        archive_format="no-archive",
        force=True,
    )
    assert not (tmp_path / "m" / "stale.txt").exists()
    assert read_manifest(tmp_path / "m").model.model_version == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_failed_write_leaves_no_partial_file(
    tmp_path: Path, inputs: ModelInputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchwick.archiver import writer

    def explode(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "_write_zip", explode)
    with pytest.raises(ArchiveError, match="No space left on device"):
        archive_model(
            model_name="m", version="1", handler=str(inputs.handler), export_path=tmp_path / "o"
        )
    assert not (tmp_path / "o").exists()  # created by this call, so removed again
    (tmp_path / "kept").mkdir()
    with pytest.raises(ArchiveError):
        archive_model(
            model_name="m", version="1", handler=str(inputs.handler), export_path=tmp_path / "kept"
        )
    assert os.listdir(tmp_path / "kept") == []


def test_torchserve_python_api(tmp_path: Path, inputs: ModelInputs) -> None:
    config = ModelArchiverConfig(
        model_name="compat",
        handler=str(inputs.handler),
        version="1.0",
        serialized_file=str(inputs.weights),
        export_path=str(tmp_path),
        archive_format="tgz",
    )
    result = ModelArchiver.generate_model_archive(config)
    assert result.path == tmp_path / "compat.tar.gz"
    assert read_manifest(result.path).model.serialized_file == "model.pt"
    assert ModelArchiverConfig(model_name="a", handler="b", version="c").export_path == os.getcwd()


def test_progress_bar_only_when_asked(
    tmp_path: Path, inputs: ModelInputs, capsys: pytest.CaptureFixture[str]
) -> None:
    archive_model(
        model_name="m",
        version="1",
        handler="base_handler",
        serialized_file=inputs.weights,
        export_path=tmp_path / "a",
    )
    assert capsys.readouterr().err == ""  # stderr is not a TTY under pytest
    archive_model(
        model_name="m",
        version="1",
        handler="base_handler",
        serialized_file=inputs.weights,
        export_path=tmp_path / "b",
        progress=True,
    )
    captured = capsys.readouterr()
    assert captured.out == "" and "100%" in captured.err
