"""``TextHandler``: text input and tokenisation for text handlers.

Tokenizer, from the archive's extra files (the first found; ``handler: {tokenizer: FILE}``
picks one explicitly):

* ``tokenizer.json``: a Hugging Face ``tokenizers`` file; ids are ``encode(text).ids``;
* ``vocab.txt``: one token per line, id = line number;
* ``source_vocab.json``: a JSON object ``{token: id}``;
* ``source_vocab.pt``: TorchServe's layout, a ``torch.save``d torchtext vocabulary, read
  without unpickling code (see ``source_vocab``).

For the plain vocabularies the text is lower-cased and split into words and punctuation;
with ``handler: {ngrams: n}`` the n-grams up to ``n`` are added as space-joined tokens (default
1; 2 for ``source_vocab.pt``, TorchServe's ``TextClassifier.ngrams``). With ``source_vocab.pt``
punctuation is dropped before the lookup, as TorchServe's text classifier removes it.
Unknown tokens map to the vocabulary's default index (``set_default_index``) or to
``<unk>``/``[UNK]`` when it has one, and are dropped otherwise. The pad id is that of
``<pad>``/``[PAD]``, else 0.

Each request's input (``data`` or ``body``) must be UTF-8 text, or a JSON string, or a JSON
object with a ``text`` field. ``handler: {max_length: N}`` (default 512) truncates ids.

Failure mode: missing tokenizer file -> ``RuntimeError`` at load; a request that is not
valid UTF-8, not text, or empty -> ``InvalidInput`` (400) for that request.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Protocol

from ..base_handler import BaseHandler
from ..context import Context
from ..errors import InvalidInput

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "source_vocab.json", "source_vocab.pt")
_WORDS = re.compile(r"\w+|[^\w\s]")
_PUNCTUATION = re.compile(r"[^\w\s]")


class Tokenizer(Protocol):
    """What text handlers need from a tokenizer."""

    pad_id: int

    def encode(self, text: str) -> list[int]: ...


class HuggingFaceTokenizer:
    """A ``tokenizers`` JSON tokenizer."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self._tokenizer = HFTokenizer.from_file(str(path))
        self.pad_id = next(
            (
                found
                for name in ("[PAD]", "<pad>")
                if (found := self._tokenizer.token_to_id(name)) is not None
            ),
            0,
        )

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text).ids
        return ids


class VocabularyTokenizer:
    """Lower-case word/punctuation split plus n-grams, looked up in a vocabulary."""

    def __init__(
        self,
        vocab: dict[str, int],
        ngrams: int = 1,
        *,
        unk_id: int | None = None,
        drop_punctuation: bool = False,
    ) -> None:
        if not vocab:
            raise RuntimeError("the vocabulary is empty")
        self.vocab = vocab
        self.ngrams = max(1, ngrams)
        self.drop_punctuation = drop_punctuation
        self.unk_id = unk_id
        if self.unk_id is None:
            self.unk_id = next((vocab[t] for t in ("<unk>", "[UNK]") if t in vocab), None)
        self.pad_id = next((vocab[t] for t in ("<pad>", "[PAD]") if t in vocab), 0)

    @classmethod
    def from_file(cls, path: Path, ngrams: int | None = None) -> VocabularyTokenizer:
        if path.suffix == ".pt":
            from .source_vocab import read_source_vocab

            vocab, default = read_source_vocab(path)
            return cls(
                vocab, 2 if ngrams is None else ngrams, unk_id=default, drop_punctuation=True
            )
        ngrams = 1 if ngrams is None else ngrams
        if path.suffix == ".json":
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or not all(isinstance(v, int) for v in raw.values()):
                raise RuntimeError(f"{path.name} must be a JSON object of token -> integer id")
            return cls({str(k): int(v) for k, v in raw.items()}, ngrams)
        lines = path.read_text(encoding="utf-8").splitlines()
        return cls({token: i for i, token in enumerate(lines) if token}, ngrams)

    def tokens(self, text: str) -> list[str]:
        words = _WORDS.findall(text.lower())
        if self.drop_punctuation:
            words = [w for w in words if not _PUNCTUATION.fullmatch(w)]
        grams = list(words)
        for n in range(2, self.ngrams + 1):
            grams += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        return grams

    def encode(self, text: str) -> list[int]:
        ids = []
        for token in self.tokens(text):
            found = self.vocab.get(token, self.unk_id)
            if found is not None:
                ids.append(found)
        return ids


def load_tokenizer(model_dir: Path, config: dict[str, Any]) -> Tokenizer:
    """The tokenizer from ``model_dir`` (see the module docstring for the search order)."""
    named = config.get("tokenizer")
    candidates = [str(named)] if named else list(TOKENIZER_FILES)
    ngrams = int(config["ngrams"]) if "ngrams" in config else None
    for name in candidates:
        path = (model_dir / name).resolve()
        if not path.is_relative_to(model_dir.resolve()) or not path.is_file():
            continue
        # A plain {token: id} vocabulary is JSON too; only source_vocab.json is read as one.
        if path.suffix == ".json" and path.name != "source_vocab.json":
            return HuggingFaceTokenizer(path)
        return VocabularyTokenizer.from_file(path, ngrams)
    raise RuntimeError(
        "text handlers need a tokenizer in the archive: one of "
        f"{', '.join(candidates)} (torch-model-archiver --extra-files)"
    )


class TextHandler(BaseHandler):
    """Base for text handlers: tokenizer loading and per-request text extraction."""

    def initialize(self, context: Context) -> None:
        super().initialize(context)
        model_dir = Path(context.system_properties["model_dir"])
        self.tokenizer = load_tokenizer(model_dir, self.handler_config)
        self.max_length = int(self.handler_config.get("max_length", 512))

    def text_from_request(self, row: Any) -> str:
        """One request's text (``InvalidInput`` when it is not usable text)."""
        value = self.request_payload(row)
        if isinstance(value, dict) and "text" in value:
            value = value["text"]
        if isinstance(value, (bytes, bytearray)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"the text is not valid UTF-8 ({exc.reason})") from None
        if not isinstance(value, str):
            raise InvalidInput(f"expected text, got {type(value).__name__}")
        text = value.strip()
        if not text:
            raise InvalidInput("the text is empty")
        return text

    def ids_from_request(self, row: Any) -> list[int]:
        """One request's token ids, truncated to ``max_length``."""
        return self.tokenizer.encode(self.text_from_request(row))[: self.max_length]
