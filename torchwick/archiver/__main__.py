"""``python -m torchwick.archiver``: the same as ``torch-model-archiver``."""

import sys

from .cli import main

sys.exit(main())
