"""Prometheus text exposition (format 0.0.4) in the shape TorchServe's Java client writes.

prometheus-client's own ``generate_latest`` sorts label names and appends ``_total`` to counter
family names; TorchServe's output keeps labels in declaration order and ends every label set
with a comma (``Requests2XX{Level="Host",Hostname="h",} 8.0``). Scrapers accept both, but
clients and tests written against TorchServe sometimes match the text, so this writer keeps
TorchServe's shape while reading the metrics from a prometheus-client registry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.registry import Collector

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def render_text(registry: Collector, names: Iterable[str] = ()) -> bytes:
    """The registry's metrics as exposition text; with ``names``, only those sample names."""
    wanted = set(names)
    lines: list[str] = []
    for family in registry.collect():
        # ``_created`` (prometheus-client's creation stamps) is not in TorchServe's output and
        # would read as a family of its own in the 0.0.4 text format.
        samples = [
            s
            for s in family.samples
            if (not wanted or s.name in wanted or family.name in wanted)
            and not s.name.endswith("_created")
        ]
        if wanted and not samples and family.name not in wanted:
            continue
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        kind = "untyped" if family.type == "unknown" else family.type
        lines.append(f"# HELP {family.name} {doc}\n# TYPE {family.name} {kind}\n")
        for sample in samples:
            if sample.labels:
                labels = "".join(
                    f'{key}="{_escape(value)}",' for key, value in sample.labels.items()
                )
                lines.append(f"{sample.name}{{{labels}}} {_value(sample.value)}\n")
            else:
                lines.append(f"{sample.name} {_value(sample.value)}\n")
    return "".join(lines).encode("utf-8")


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
