"""The one error type of configuration loading.

``ConfigError`` is raised while settings are built, before the server starts. Its message is
one line meant for the operator: it names the key (or file, or flag) at fault and what is
wrong with it. The CLI prints it and exits with status 1.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Invalid or missing configuration; the message names the key, file or flag at fault."""
