"""Values the management API hands to the data plane, and the effective settings of a version.

``RegisterRequest`` is part of the data plane's public contract (re-exported by
``torchwick.server.dataplane``; the data plane's results are in ``torchwick.server.contracts``).
``ModelVersionConfig`` is what registration resolved for one model version after applying
TorchServe's precedence rules (see ``precedence``); it is defined in
``torchwick.server.model_version`` so that the worker layer can use it without importing the
registry, and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchwick.server.model_version import ModelVersionConfig

__all__ = ["ModelVersionConfig", "RegisterRequest"]


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """The parameters of ``POST /models`` (and of a startup model); ``None`` = not given.

    ``synchronous`` defaults to True as TorchServe's REST API does; gRPC passes False.
    """

    url: str
    model_name: str | None = None
    handler: str | None = None
    runtime: str | None = None
    batch_size: int | None = None
    max_batch_delay: int | None = None
    initial_workers: int | None = None
    synchronous: bool = True
    response_timeout: int | None = None
    startup_timeout: int | None = None
