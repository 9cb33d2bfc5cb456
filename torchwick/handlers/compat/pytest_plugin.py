"""Opt-in pytest plugin: ``import ts.*`` in handler unit tests resolves to torchwick.

Enable it explicitly, in a ``conftest.py``::

    pytest_plugins = ["torchwick.handlers.compat.pytest_plugin"]

or on the command line with ``-p torchwick.handlers.compat.pytest_plugin``. Loading it calls
``torchwick.handlers.compat.install()`` before test modules are collected, so their top-level
``from ts.torch_handler.unit_tests.test_utils.mock_context import MockContext`` works.
It is not registered as an automatic (entry-point) plugin. Failure mode: none of its own.
"""

from __future__ import annotations

from . import install

install()
