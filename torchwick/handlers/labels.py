"""Class-index to label mapping (``index_to_name.json``) and result shaping.

``index_to_name.json`` maps a class index (as a string) to a label, or to a list whose last
element is the label (ImageNet files carry ``["n01440764", "tench"]``).

Failure mode: a mapping file that is not a JSON object of str -> str|list raises
``ValueError`` naming the file; ``map_class_to_label`` raises ``TypeError`` for input that is
not a list of lists.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("torchwick.model")

MAPPING_FILE = "index_to_name.json"


def load_label_mapping(mapping_file_path: str | Path) -> dict[str, str] | None:
    """Read a label mapping; ``None`` (with a warning) when the file does not exist."""
    path = Path(mapping_file_path)
    if not path.is_file():
        logger.warning("missing the %s file; results are keyed by class index", path.name)
        return None
    with path.open(encoding="utf-8") as handle:
        raw = json.load(handle)
    if not isinstance(raw, dict):
        raise ValueError(f"{path.name} must hold a JSON object of index -> label")
    mapping: dict[str, str] = {}
    for key, entry in raw.items():
        label = entry[-1] if isinstance(entry, list) and entry else entry
        if not isinstance(label, (str, int, float)):
            raise ValueError(f"{path.name}: the label of {key!r} must be a string or a list")
        mapping[str(key)] = str(label)
    return mapping


def label_for(index: int, mapping: Mapping[str, str] | None) -> str:
    """The label of a class index, or the index as text when it has none."""
    if mapping is None:
        return str(index)
    return mapping.get(str(index), str(index))


def map_class_to_label(
    probs: Sequence[Sequence[float]],
    mapping: Mapping[str, str] | None = None,
    lbl_classes: Iterable[Sequence[Any]] | None = None,
) -> list[dict[str, float]]:
    """One ``{label: probability}`` dict per row of ``probs``.

    ``lbl_classes`` gives each row's class indices (e.g. from ``topk``); by default a row's
    classes are ``0..len(row)-1``.
    """
    if not isinstance(probs, list) or not all(isinstance(row, list) for row in probs):
        raise TypeError("probs must be a list of lists (convert tensors with .tolist())")
    if mapping is not None and not isinstance(mapping, Mapping):
        raise TypeError("mapping must be a dict of class index -> label")
    classes: Iterable[Sequence[Any]] = (
        lbl_classes if lbl_classes is not None else [range(len(row)) for row in probs]
    )
    return [
        {label_for(int(cls), mapping): float(p) for cls, p in zip(row_classes, row, strict=True)}
        for row_classes, row in zip(classes, probs, strict=True)
    ]
