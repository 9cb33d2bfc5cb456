"""The worker side of a warm spare: what it does before it connects to the frontend.

A warm spare (``spares.py`` starts it as ``worker_main --warm-threads N``) runs, ahead of any
LOAD, exactly the steps a cold worker runs at LOAD before model code: the thread budget
(``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, then the first import of torch and its intra/inter-op
threads) and the import of the handler runtime (``torchwick.handlers.service``). Only then does
it connect and send its HELLO, so a connected spare is a warm one. A model whose LOAD frame has
the same thread budget therefore finds the process in the state a cold worker reaches at that
point, and only loads its handler. Per-model folders (``install_py_dep_per_model``) are appended
to ``sys.path`` at LOAD in both cases, after torch was imported in both cases.

Anything else that has to be fixed before torch is imported belongs in the frontend's
``WarmProfile``: the frontend gives a spare only to a worker with an equal profile, and starts
the others cold. A failure here (torch cannot be imported) ends the process with a traceback
on stderr (the model log) and exit code 1; the frontend counts it as a failed spare.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

#: What a cold worker imports at LOAD before the handler (``worker_main.load_model_service``).
HANDLER_RUNTIME = "torchwick.handlers.service"


def warm_up(threads: int, apply_threads: Callable[[int], None]) -> None:
    """Apply the thread budget (importing torch) and import the handler runtime."""
    apply_threads(max(1, threads))
    importlib.import_module(HANDLER_RUNTIME)
