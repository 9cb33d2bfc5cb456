"""Configuration: the properties reader, listener addresses and the settings loader.

Public entry points (everything else in this package is an implementation detail):

* ``load_settings(options, environ, cwd) -> Settings`` and ``CliOptions``;
* ``log_startup_warnings(settings)`` / ``startup_warnings(settings)``;
* ``parse_address(url) -> ListenAddress``;
* ``parse_properties(text) -> dict[str, str]``;
* ``configure_logging(log_config)``;
* ``ConfigError``, raised for any invalid configuration with a message naming the key.
"""

from __future__ import annotations

from .addresses import ListenAddress, parse_address
from .errors import ConfigError
from .loader import CliOptions, load_settings, log_startup_warnings, startup_warnings
from .logging_setup import configure_logging
from .properties import parse_properties, substitute_env

__all__ = [
    "CliOptions",
    "ConfigError",
    "ListenAddress",
    "configure_logging",
    "load_settings",
    "log_startup_warnings",
    "parse_address",
    "parse_properties",
    "startup_warnings",
    "substitute_env",
]
