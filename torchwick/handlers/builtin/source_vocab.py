"""Reading TorchServe's ``source_vocab.pt`` (a ``torch.save``d torchtext vocabulary) safely.

TorchServe's text handlers ``torch.load`` this file with full unpickling, which can run any
code an archive carries. torchwick reads it with ``torch.load(weights_only=True)``: torch's
restricted unpickler, which builds only tensors, containers and primitive values. The two
torchtext classes such a file names are admitted as inert stand-ins that only record the
state the pickle gives them (no torchtext needed, nothing of theirs runs):

* ``torchtext.vocab.vocab.Vocab`` (torchtext >= 0.10, what ``build_vocab_from_iterator``
  returns and TorchServe's text-classification example saves): an ``nn.Module`` state whose
  ``vocab`` entry is a ``torchtext._torchtext.Vocab`` with state ``(version, [default_index]
  or [], itos, tensors)``;
* ``torchtext.vocab.Vocab`` (legacy): a state dict with ``itos`` and optionally ``unk_index``.

Failure mode: ``RuntimeError`` naming the file when it is not such a vocabulary (any other
class in the pickle is refused by torch's unpickler), or when torch is too old to map class
names to stand-ins (``torch.serialization.safe_globals`` with ``(class, name)`` pairs).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


class _State:
    """Stand-in for a pickled torchtext object: keeps whatever state it is given."""

    def __init__(self) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ModuleVocab(_State):
    """``torchtext.vocab.vocab.Vocab``."""


class _NativeVocab(_State):
    """``torchtext._torchtext.Vocab``."""


class _LegacyVocab(_State):
    """``torchtext.vocab.Vocab`` (torchtext < 0.10)."""


_STAND_INS = [
    (_ModuleVocab, "torchtext.vocab.vocab.Vocab"),
    (_NativeVocab, "torchtext._torchtext.Vocab"),
    (_LegacyVocab, "torchtext.vocab.Vocab"),
]


def _from_native(state: Any) -> tuple[list[str], int | None]:
    if not (isinstance(state, tuple) and len(state) >= 3 and isinstance(state[2], list)):
        raise ValueError("unexpected torchtext vocabulary state")
    integers, itos = state[1], state[2]
    default = int(integers[0]) if isinstance(integers, list) and integers else None
    return [str(t) for t in itos], default


def read_source_vocab(path: Path) -> tuple[dict[str, int], int | None]:
    """``({token: id}, default_index)`` from a ``source_vocab.pt`` (see the module docstring)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:
        raise RuntimeError(f"{path.name}: reading it safely needs torch >= 2.6")
    try:
        with safe_globals(_STAND_INS):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(loaded, _ModuleVocab) and isinstance(loaded.state, dict):
            native = loaded.state.get("vocab")
            if not isinstance(native, _NativeVocab):
                raise ValueError("the module has no native vocabulary")
            itos, default = _from_native(native.state)
        elif isinstance(loaded, _NativeVocab):
            itos, default = _from_native(loaded.state)
        elif isinstance(loaded, _LegacyVocab) and isinstance(loaded.state, dict):
            itos = [str(t) for t in loaded.state.get("itos") or []]
            unk = loaded.state.get("unk_index")
            default = int(unk) if isinstance(unk, int) else None
        else:
            raise ValueError(f"found {type(loaded).__name__}, not a torchtext vocabulary")
    except (pickle.UnpicklingError, RuntimeError, ValueError, TypeError, EOFError) as exc:
        raise RuntimeError(f"{path.name} is not a readable torchtext vocabulary: {exc}") from exc
    if not itos:
        raise RuntimeError(f"{path.name}: the vocabulary is empty")
    return {token: index for index, token in enumerate(itos)}, default
