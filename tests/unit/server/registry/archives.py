"""Build small real model archives for registry, model store and data plane tests."""

from __future__ import annotations

from pathlib import Path

from torchwick.archiver import archive_model

HANDLER_SOURCE = '''
"""Echo handler: answers each request with its body."""


def handle(data, context):
    if data is None:
        return None
    return [row.get("body") or row.get("data") or b"" for row in data]
'''


def build_archive(
    directory: Path,
    name: str = "echo",
    version: str = "1.0",
    *,
    config_yaml: str | None = None,
    archive_format: str = "default",
    file_name: str | None = None,
) -> Path:
    """A ``name.mar`` (or ``.tar.gz``/folder) in ``directory`` with a module-level handler."""
    source = directory / f".src-{name}-{version}"
    source.mkdir(parents=True, exist_ok=True)
    handler = source / "echo_handler.py"
    handler.write_text(HANDLER_SOURCE)
    config = None
    if config_yaml is not None:
        config = source / "model-config.yaml"
        config.write_text(config_yaml)
    result = archive_model(
        model_name=name,
        version=version,
        handler=str(handler),
        config_file=str(config) if config else None,
        export_path=source,
        archive_format=archive_format,
        force=True,
        source_date_epoch=1_700_000_000,
    )
    built = Path(result.path)
    return built.rename(directory / (file_name or built.name))
