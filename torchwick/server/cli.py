"""The ``torchserve`` command: TorchServe 0.12's flags, torchwick's server.

``torchserve [--start]`` starts the server in the background and returns once it answers
``/ping`` (printing ``Model server started.``); the server keeps writing its log lines (and its
workers') to the launcher's stdout/stderr, as TorchServe's does. ``--foreground`` runs it in
this process until it is stopped; ``--stop`` stops a background (or foreground) server;
``-v`` prints the version.
``--workflow-store``, ``--plugins-path`` and ``--cpp-log-config`` are accepted and ignored with
a warning. Every failure is reported in one line on stderr with exit status 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import cast

from torchwick import TORCHSERVE_COMPAT_VERSION, __version__

from .config import CliOptions, ConfigError, configure_logging, load_settings
from .config.loader import log_startup_warnings
from .daemon import (
    AlreadyRunningError,
    PidRecord,
    claim_pid_file,
    pid_file_path,
    release_pid_file,
    start_daemon,
    stop_daemon,
)
from .settings import Settings

ServeFunction = Callable[[Settings], int]
_IGNORED_FLAGS = ("workflow_store", "plugins_path", "cpp_log_config")


def build_parser(prog: str = "torchserve") -> argparse.ArgumentParser:
    """The argument parser; flag names and aliases are TorchServe's."""
    parser = argparse.ArgumentParser(
        prog=prog, description="torchwick model server (TorchServe-compatible command line)."
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("-v", "--version", action="store_true", help="print the version")
    action.add_argument("--start", action="store_true", help="start the server (the default)")
    action.add_argument("--stop", action="store_true", help="stop the running server")
    parser.add_argument("--ts-config", type=Path, help="config.properties to read")
    parser.add_argument("--model-store", type=Path, help="directory holding model archives")
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help="models to load at startup: NAME=FILE.mar, FILE.mar or all",
    )
    parser.add_argument("--log-config", type=Path, help="logging dictConfig (.json/.yaml)")
    parser.add_argument("--foreground", action="store_true", help="run in this process")
    parser.add_argument(
        "--no-config-snapshots", "--ncs", action="store_true", help="do not write snapshots"
    )
    parser.add_argument(
        "--disable-token-auth", "--dt", action="store_true", help="turn token auth off"
    )
    parser.add_argument("--enable-model-api", action="store_true", help="allow register/unregister")
    parser.add_argument("--workflow-store", help="ignored: torchwick has no workflows")
    parser.add_argument("--plugins-path", "--ppath", help="ignored: no Java plugins")
    parser.add_argument("--cpp-log-config", help="ignored: no C++ backend")
    return parser


def options_from_args(args: argparse.Namespace) -> CliOptions:
    """The configuration-relevant part of parsed arguments."""
    return CliOptions(
        ts_config=args.ts_config,
        model_store=args.model_store,
        models=tuple(args.models) if args.models is not None else None,
        log_config=args.log_config,
        no_config_snapshots=args.no_config_snapshots,
        disable_token_auth=args.disable_token_auth,
        enable_model_api=args.enable_model_api,
        foreground=args.foreground,
    )


def forward_args(options: CliOptions, cwd: Path) -> list[str]:
    """Flags that make a child ``--foreground`` server see the same options (paths absolute)."""
    argv: list[str] = []
    for flag, path in (
        ("--ts-config", options.ts_config),
        ("--model-store", options.model_store),
        ("--log-config", options.log_config),
    ):
        if path is not None:
            argv += [flag, str(cwd / path.expanduser())]
    if options.models is not None:
        argv += ["--models", *options.models]
    for flag, enabled in (
        ("--ncs", options.no_config_snapshots),
        ("--disable-token-auth", options.disable_token_auth),
        ("--enable-model-api", options.enable_model_api),
    ):
        if enabled:
            argv.append(flag)
    return argv


def torchserve_main(argv: Sequence[str] | None = None, prog: str = "torchserve") -> int:
    """Entry point of ``torchserve`` and ``python -m torchwick.server``; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    environ: Mapping[str, str] = os.environ
    cwd = Path.cwd()
    if args.version:
        print(f"torchwick {__version__} (TorchServe {TORCHSERVE_COMPAT_VERSION} compatible)")
        return 0
    for name in _IGNORED_FLAGS:
        if getattr(args, name) is not None:
            flag = "--" + name.replace("_", "-")
            print(f"torchwick: warning: {flag} is not supported and is ignored", file=sys.stderr)
    if args.stop:
        return stop_daemon(environ, out=sys.stdout, err=sys.stderr)
    options = options_from_args(args)
    try:
        settings = load_settings(options, environ, cwd)
        require_model_store(settings)
        if options.foreground:
            return run_foreground(settings, environ)
    except ConfigError as error:
        print(f"torchwick: configuration error: {error}", file=sys.stderr)
        return 1
    # Flush what this process printed so far: the server writes to the same stdout/stderr.
    sys.stdout.flush()
    sys.stderr.flush()
    return start_daemon(
        settings,
        forward_args(options, cwd),
        environ,
        cwd,
        out=sys.stdout,
        err=sys.stderr,
        console=True,
    )


def require_model_store(settings: Settings) -> None:
    """Raise ``ConfigError`` unless a model store was given (by flag or config)."""
    if settings.model_store is None:
        raise ConfigError(
            "--model-store is required: pass --model-store DIR or set model_store in the "
            "config file"
        )


def run_foreground(settings: Settings, environ: Mapping[str, str]) -> int:
    """Run the server in this process until it stops; return its exit code.

    Configures logging, logs the startup warnings (once), claims the PID file, calls
    ``torchwick.server.app.serve(settings)``, then removes the PID and key files. Raises
    ``ConfigError`` for an unusable ``--log-config``.
    """
    configure_logging(settings.log_config)
    log_startup_warnings(settings)
    serve = _load_serve()
    if serve is None:
        print("torchwick: the server (torchwick.server.app) is not installed", file=sys.stderr)
        return 1
    pid_path = pid_file_path(environ)
    try:
        claim_pid_file(pid_path, PidRecord(os.getpid(), str(settings.key_file), time.time()))
    except AlreadyRunningError as error:
        print(f"torchwick: {error}", file=sys.stderr)
        return 1
    fallback = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    )
    if fallback:
        signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        return serve(settings)
    finally:
        if fallback:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        release_pid_file(pid_path, os.getpid())
        settings.key_file.unlink(missing_ok=True)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """Fallback SIGTERM handler: unwind through ``finally`` blocks (the app may install its own)."""
    raise SystemExit(128 + signum)


def _load_serve() -> ServeFunction | None:
    """Import ``torchwick.server.app.serve`` lazily; None when the module is not there."""
    try:
        module = importlib.import_module("torchwick.server.app")
    except ModuleNotFoundError as error:
        if error.name != "torchwick.server.app":
            raise
        return None
    return cast(ServeFunction, module.serve)
