"""torchwick: a pure-Python, secure-by-default successor to TorchServe.

Three parts live under this one package: ``archiver`` (the ``.mar`` format), ``handlers``
(the handler contract and default handlers) and ``server`` (the model server).
"""

__version__ = "0.1.0"
#: The TorchServe release whose surface torchwick reproduces.
TORCHSERVE_COMPAT_VERSION = "0.12.0"
