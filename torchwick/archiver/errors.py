"""Errors raised by the archiver.

Every message is a single line meant for a person: the CLI prints it as is, and the server
passes it on in a 400 answer. ``UnsafeArchiveError`` always names the offending entry and the
rule it broke, so a refused upload can be diagnosed without opening the file.
"""

from __future__ import annotations


class ArchiveError(Exception):
    """An archive (or the inputs to build one) cannot be used; ``str(error)`` is one line."""

    def __init__(self, message: str) -> None:
        # Collapse newlines so that a message built from user input stays one line.
        super().__init__(" ".join(message.split("\n")))

    @property
    def message(self) -> str:
        """The one-line message."""
        return str(self.args[0])


class UnsafeArchiveError(ArchiveError):
    """An archive entry breaks a safety rule; nothing has been written when this is raised."""

    def __init__(self, entry: str, rule: str) -> None:
        super().__init__(f'unsafe archive entry "{_printable(entry)}": {rule}')
        self.entry = entry
        self.rule = rule


def _printable(name: str) -> str:
    """The name as stored, with control characters escaped so the message stays one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in name)
