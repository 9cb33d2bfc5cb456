"""The ``torchwick`` command: one entry point for the server and the archiver.

    torchwick serve [FLAGS]    run the server in the foreground (for containers and terminals)
    torchwick start [FLAGS]    start it in the background; same as ``torchserve --start``
    torchwick stop             stop a running server; same as ``torchserve --stop``
    torchwick archive [ARGS]   build or inspect a model archive (``torch-model-archiver`` flags)
    torchwick bench URL [ARGS] load a running server and report throughput and latency
    torchwick --version

``FLAGS`` are ``torchserve``'s (``--model-store``, ``--models``, ``--ts-config``, ...).
``serve`` stays in the foreground, as a service manager or container runtime expects; use
``start`` (or ``torchserve``) for TorchServe's detach-and-return behaviour.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from torchwick import TORCHSERVE_COMPAT_VERSION, __version__

USAGE = """usage: torchwick <command> [args]

commands:
  serve     run the model server in the foreground (torchserve flags)
  start     start the model server in the background (same as torchserve --start)
  stop      stop the running model server (same as torchserve --stop)
  archive   build or inspect a model archive (torch-model-archiver flags)
  bench     load a running server (torchwick or TorchServe): throughput, latency, errors

options:
  -h, --help     show this help
  -V, --version  print the version

Run 'torchwick <command> --help' for a command's flags.
"""
_MODE_FLAGS = frozenset({"--start", "--stop", "-v", "--version", "--foreground"})


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``torchwick <command>``; returns the exit status (2 for bad usage)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        sys.stdout.write(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command in {"-V", "--version", "version"}:
        print(f"torchwick {__version__} (TorchServe {TORCHSERVE_COMPAT_VERSION} compatible)")
        return 0
    if command in {"serve", "start"}:
        clash = sorted(_MODE_FLAGS.intersection(rest))
        if clash:
            print(
                f"torchwick {command}: {', '.join(clash)} is implied or not allowed here",
                file=sys.stderr,
            )
            return 2
        from torchwick.server.cli import torchserve_main

        mode = "--foreground" if command == "serve" else "--start"
        return torchserve_main([mode, *rest], prog=f"torchwick {command}")
    if command == "stop":
        from torchwick.server.cli import torchserve_main

        return torchserve_main(["--stop", *rest], prog="torchwick stop")
    if command == "archive":
        from torchwick.archiver.cli import archive_main

        return archive_main(rest, prog="torchwick archive")
    if command == "bench":
        from torchwick.bench import bench_main

        return bench_main(rest, prog="torchwick bench")
    sys.stderr.write(f"torchwick: unknown command {command!r}\n\n{USAGE}")
    return 2
