"""``text_classifier`` under every runtime and with every tokenizer source."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.models import TinyTextClassifier, model_dir_for, write_labels
from tests.unit.handlers.helpers import body_json, load_service, make_request
from torchwick.handlers.builtin.text import VocabularyTokenizer
from torchwick.handlers.service import HandlerLoadError

WORDS = ["<pad>", "<unk>", "the", "movie", "was", "great", "awful", "plot", "!", "acting"]
LABELS = ["negative", "neutral", "positive", "mixed"]


@pytest.fixture(autouse=True)
def _quiet_exporters() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _write_tokenizer(model_dir: Path, kind: str) -> None:
    if kind == "vocab.txt":
        (model_dir / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    elif kind == "source_vocab.json":
        (model_dir / "source_vocab.json").write_text(
            json.dumps({w: i for i, w in enumerate(WORDS)})
        )
    else:
        from tokenizers import Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import WordLevel

        tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.save(str(model_dir / "tokenizer.json"))


def _expected(model: TinyTextClassifier, texts: list[str]) -> list[list[float]]:
    tokenizer = VocabularyTokenizer({w: i for i, w in enumerate(WORDS)})
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
            logits = model(ids, torch.tensor([0]))
            rows.append(torch.softmax(logits, 1)[0].tolist())
    return rows


@pytest.mark.parametrize(
    ("runtime", "tokenizer"),
    [
        ("eager", "vocab.txt"),
        ("torchscript", "tokenizer.json"),
        ("onnx", "source_vocab.json"),
    ],
)
def test_text_classifier_batch(runtime: str, tokenizer: str, model_dir: Path) -> None:
    torch.manual_seed(0)
    model = TinyTextClassifier().eval()
    spec = model_dir_for(
        runtime,
        model,
        model_dir,
        "text_classifier",
        example=torch.randint(1, 10, (2, 5)),
        script=True,
        onnx_kwargs={
            "input_names": ("ids",),
            "dynamic_axes": {"ids": {0: "n", 1: "len"}, "output": {0: "n"}},
        },
    )
    _write_tokenizer(model_dir, tokenizer)
    write_labels(model_dir, LABELS)
    harness = load_service(spec)
    texts = ["The movie was great !", "awful plot", "The acting, the plot: AWFUL"]
    responses = harness.predict(
        make_request(texts[0]),
        make_request(b"\xff\xfe\xfa bad utf-8", "text/plain"),
        make_request(texts[1].encode("utf-8"), "application/octet-stream"),
        make_request("   "),
        make_request({"text": texts[2]}),
    )
    assert [r.status for r in responses] == [200, 400, 200, 400, 200]
    assert "UTF-8" in body_json(responses[1])["message"]
    assert "empty" in body_json(responses[3])["message"]
    got = [body_json(responses[i]) for i in (0, 2, 4)]
    for result, want in zip(got, _expected(model, texts), strict=True):
        assert list(result) == LABELS
        assert list(result.values()) == pytest.approx(want, abs=1e-4)


def test_padded_convention_for_pytorch_models(model_dir: Path) -> None:
    torch.manual_seed(0)
    model = TinyTextClassifier().eval()
    spec = model_dir_for(
        "eager", model, model_dir, "text_classifier", config={"handler": {"text_input": "padded"}}
    )
    _write_tokenizer(model_dir, "vocab.txt")
    harness = load_service(spec)
    texts = ["great", "the movie was awful !"]
    responses = harness.predict(*[make_request(t) for t in texts])
    for response, want in zip(responses, _expected(model, texts), strict=True):
        assert list(body_json(response).values()) == pytest.approx(want, abs=1e-4)


def test_vocabulary_ngrams_and_unknowns() -> None:
    vocab = {"<unk>": 1, "good": 2, "movie": 3, "good movie": 4}
    tokenizer = VocabularyTokenizer(vocab, ngrams=2)
    assert tokenizer.encode("Good movie, really") == [2, 3, 1, 1, 4, 1, 1]
    assert VocabularyTokenizer({"a": 5}).encode("a b") == [5]  # no <unk>: dropped


def test_missing_tokenizer_fails_load(model_dir: Path) -> None:
    spec = model_dir_for("eager", TinyTextClassifier(), model_dir, "text_classifier")
    with pytest.raises(HandlerLoadError, match="tokenizer"):
        load_service(spec)


def test_explanations_refused_for_token_ids(model_dir: Path) -> None:
    spec = model_dir_for("eager", TinyTextClassifier(), model_dir, "text_classifier")
    _write_tokenizer(model_dir, "vocab.txt")
    harness = load_service(spec)
    (response,) = harness.predict(make_request("great", headers=(("explain", "True"),)))
    assert response.status == 400
