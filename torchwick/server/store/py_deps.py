"""Per-model Python dependencies: ``install_py_dep_per_model=true`` (off by default, as in
TorchServe).

An archive whose MANIFEST names a ``requirementsFile`` has it installed with
``python -m pip install --target <workdir>/site-packages -r <file>`` (the server's own
interpreter, never into the server's environment) while it registers. The target folder is
put on that model's workers' ``sys.path`` only (``LoadSpec.extra_paths``), after the worker's
own paths, and is deleted with the model's private folder. pip's output goes to the model log
line by line. Options inside ``requirements.txt`` (``--no-index``, ``--find-links``) are
pip's own. A failed install fails the registration with TorchServe's 400 message and the
reason (pip's last error line). A folder entry used in place (no private folder) cannot get
a target folder and fails the registration the same way.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from torchwick.server.errors import BadRequest
from torchwick.server.workers.model_log import MODEL_LOGGER

TARGET_DIR = "site-packages"
log = logging.getLogger(MODEL_LOGGER)


def requirements_path(model_root: Path, requirements_file: str | None) -> Path | None:
    """The archive's requirements file, or None when the MANIFEST names none."""
    if not requirements_file:
        return None
    return model_root / requirements_file


async def install_requirements(name: str, requirements: Path, workdir: Path | None) -> Path:
    """pip-install ``requirements`` into ``<workdir>/site-packages``; return that folder.

    Raises ``BadRequest`` ("Custom pip package installation failed for model <name>: ...")
    when pip fails, cannot run, or there is no private folder to install into.
    """
    failed = f"Custom pip package installation failed for model {name}"
    if workdir is None:
        raise BadRequest(f"{failed}: a folder used in place has no private folder to install into")
    if not requirements.is_file():
        raise BadRequest(f"{failed}: {requirements.name} is missing from the archive")
    target = workdir / TARGET_DIR
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "--target",
        str(target),
        "-r",
        str(requirements),
    ]
    prefix = f"{name}-pip"
    log.info("%s installing %s into %s", prefix, requirements.name, target)
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(requirements.parent),
        )
    except OSError as error:
        raise BadRequest(f"{failed}: cannot run pip ({error})") from None
    assert process.stdout is not None
    last_line = last_error = ""
    async for raw in process.stdout:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            log.info("%s %s", prefix, line)
            last_line = line
            if line.lstrip().upper().startswith("ERROR"):
                last_error = line
    code = await process.wait()
    if code != 0:
        reason = (last_error or last_line).strip()
        raise BadRequest(f"{failed}: pip exited with status {code}: {reason}")
    return target
