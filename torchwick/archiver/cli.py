"""``torch-model-archiver`` and ``torchwick archive``: build or inspect a model archive.

The flags and their meanings are torch-model-archiver 0.12's. On success one line goes to
stdout, ``sha256 <hex>  <path>``; errors are one line on stderr with exit status 1 (2 for usage
errors, as argparse does). ``inspect FILE`` prints an archive's manifest, model-config and file
list without extracting it. ``--archiver-version`` prints torchwick's own version, because
``-v/--version`` is the model version here, as in TorchServe.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

from torchwick import __version__

from .errors import ArchiveError
from .manifest import ARCHIVER_FORMAT_VERSION, RUNTIMES
from .packaging import BUILTIN_HANDLERS, archive_model
from .reader import ArchiveContents, inspect_archive
from .writer import ARCHIVE_FORMATS, tree_sha256

_FORMAT_HELP = """how to package the model (default: %(default)s):
  default     a zip file <model-name>.mar, compressed
  zip-store   a zip file <model-name>.mar, not compressed (faster for large weights)
  tgz         <model-name>.tar.gz holding a folder <model-name>/
  no-archive  a plain folder <export-path>/<model-name>/"""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are a single line (and still exit with status 2)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def _build_parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=prog,
        description="Package a model (weights, code, handler, config) into a model archive "
        "that TorchServe 0.12 and torchwick can serve. Subcommand: 'inspect FILE'.",
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument(
        "--model-name",
        required=True,
        help="name of the model; the output is <model-name>.mar (or .tar.gz, or a folder)",
    )
    parser.add_argument(
        "-v",
        "--version",
        required=True,
        help="model version, stored in the manifest as modelVersion",
    )
    parser.add_argument(
        "--serialized-file",
        help="weights: a state dict or TorchScript .pt/.pth, "
        ".onnx, or another file the handler loads",
    )
    parser.add_argument("--model-file", help="Python file defining the model class (eager mode)")
    parser.add_argument(
        "--handler",
        required=True,
        help="built-in handler ("
        + ", ".join(BUILTIN_HANDLERS)
        + ")\nor a handler file, optionally "
        "with an entry function: path/handler.py[:function]",
    )
    parser.add_argument(
        "--extra-files",
        help="comma-separated files, folders (their contents "
        "are stored at the archive root) or glob patterns",
    )
    parser.add_argument(
        "--runtime",
        default="python",
        choices=RUNTIMES,
        help="runtime of the handler (default: %(default)s)",
    )
    parser.add_argument(
        "--export-path",
        default=None,
        help="folder to write the archive to (default: the current folder; created if missing)",
    )
    parser.add_argument(
        "--archive-format", default="default", choices=ARCHIVE_FORMATS, help=_FORMAT_HELP
    )
    parser.add_argument(
        "-f", "--force", action="store_true", help="replace an existing archive of the same name"
    )
    parser.add_argument(
        "-r",
        "--requirements-file",
        help="pip requirements installed for this "
        "model when the server allows per-model dependencies",
    )
    parser.add_argument(
        "-c",
        "--config-file",
        help="model-config.yaml (workers, batching, timeouts, handler settings)",
    )
    parser.add_argument(
        "--archiver-version",
        action="version",
        version=f"torchwick archiver {__version__} (writes the "
        f"torch-model-archiver {ARCHIVER_FORMAT_VERSION} format)",
        help="print the archiver's own version and exit",
    )
    return parser


def _build_inspect_parser(prog: str) -> _Parser:
    parser = _Parser(
        prog=f"{prog} inspect",
        description="Show an archive's manifest, model-config and files without "
        "extracting it. The archive is checked as the server would check it.",
    )
    parser.add_argument("archive", type=Path, help=".mar, .tar.gz or model folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    return parser


def archive_main(argv: list[str] | None = None, *, prog: str = "torchwick archive") -> int:
    """Run the archiver CLI on ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler(sys.stderr)
    # The archiver only logs warnings (e.g. a glob that matched nothing); show them as such.
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(f"{prog}: warning: %(message)s"))
    logger = logging.getLogger("torchwick.archiver")
    logger.addHandler(handler)
    try:
        if args_list[:1] == ["inspect"]:
            return _run_inspect(prog, args_list[1:])
        return _run_archive(prog, args_list)
    except SystemExit as exc:  # --help, --archiver-version and usage errors
        return exc.code if isinstance(exc.code, int) else 1
    except ArchiveError as exc:
        sys.stderr.write(f"{prog}: error: {exc.message}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(
            f"{prog}: error: {exc.filename or ''} {exc.strerror or exc}".strip() + "\n"
        )
        return 1
    finally:
        logger.removeHandler(handler)


def main(argv: list[str] | None = None) -> int:
    """Console entry point of ``torch-model-archiver``."""
    return archive_main(argv, prog="torch-model-archiver")


def _run_archive(prog: str, argv: list[str]) -> int:
    args = _build_parser(prog).parse_args(argv)
    result = archive_model(
        model_name=args.model_name,
        version=args.version,
        handler=args.handler,
        serialized_file=args.serialized_file,
        model_file=args.model_file,
        extra_files=args.extra_files,
        runtime=args.runtime,
        export_path=args.export_path,
        archive_format=args.archive_format,
        force=args.force,
        requirements_file=args.requirements_file,
        config_file=args.config_file,
    )
    sys.stdout.write(f"sha256 {result.sha256}  {result.path}\n")
    return 0


def _run_inspect(prog: str, argv: list[str]) -> int:
    args = _build_inspect_parser(prog).parse_args(argv)
    contents = inspect_archive(args.archive)
    digest = _digest(contents.source)
    if args.json:
        sys.stdout.write(json.dumps(_as_json(contents, digest), indent=2) + "\n")
    else:
        sys.stdout.write(_as_text(contents, digest))
    return 0


def _digest(source: Path) -> str:
    if source.is_dir():
        return tree_sha256(source)
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _as_json(contents: ArchiveContents, digest: str) -> dict[str, object]:
    return {
        "archive": str(contents.source),
        "kind": contents.kind,
        "sha256": digest,
        "manifestFound": contents.manifest_found,
        "manifest": contents.manifest.to_json_dict(),
        "modelConfig": contents.config.raw if contents.manifest.model.config_file else None,
        "files": [
            {"name": entry.name, "size": entry.size}
            for entry in contents.entries
            if not entry.is_dir
        ],
    }


def _as_text(contents: ArchiveContents, digest: str) -> str:
    files = [entry for entry in contents.entries if not entry.is_dir]
    total = sum(entry.size for entry in files)
    width = max([len(str(entry.size)) for entry in files] + [4])
    lines = [
        f"archive: {contents.source}",
        f"kind:    {contents.kind}",
        f"sha256:  {digest}",
        "",
        "manifest:" if contents.manifest_found else "manifest: (none in the archive; assumed)",
        contents.manifest.to_json(),
        "",
    ]
    config_name = contents.manifest.model.config_file
    if config_name and contents.config_text is not None:
        lines += [f"model-config: {config_name}", contents.config_text.rstrip("\n"), ""]
    else:
        lines += ["model-config: (none)", ""]
    lines.append(f"files: {len(files)}, {total} bytes")
    lines += [f"  {entry.size:>{width}}  {entry.name}" for entry in files]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
