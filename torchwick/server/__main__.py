"""``python -m torchwick.server``: the same command line as ``torchserve``."""

from __future__ import annotations

from .cli import torchserve_main

if __name__ == "__main__":
    raise SystemExit(torchserve_main())
