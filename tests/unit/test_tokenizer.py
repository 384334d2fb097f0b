"""Tokenizer training, saving, loading and stats: offline, on small in-test corpora."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import pytest

from llmtune.config.schema import TokenizerConfig
from llmtune.errors import ConfigError, DataError, ModelError
from llmtune.tokenizer import (
    CAUSAL_SPECIAL_TOKENS,
    MASKED_SPECIAL_TOKENS,
    TokenizerReport,
    compression_stats,
    iter_texts,
    load_tokenizer,
    min_vocab_size,
    save_tokenizer,
    train_and_report,
    train_tokenizer,
)

TYPES_AND_SIZES = [("bpe", 400), ("wordpiece", 150), ("unigram", 150), ("char", 60)]
TRICKY = [
    "Hello, world!",
    "  two leading spaces and   three inside  ",
    "tabs\tand\nnewlines\n\n",
    "emoji 😀🎉 and accents café naïve über",
    "",
    "日本語のテキスト",
]
_WORDS = "the cat sat on a mat dog ran fast slow big small red blue green house tree café über".split()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Never touch the network: hub loads must fail at once, with our message.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


def make_corpus(n: int = 300, seed: int = 0) -> list[str]:
    """Sentences over a small word list, plus the tricky strings so char vocab covers them."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))) + rng.choice(".!?") for _ in range(n)]
    return lines + [text for text in TRICKY if text] * 3


def cfg_for(type_: str, vocab_size: int, **kw: object) -> TokenizerConfig:
    return TokenizerConfig(type=type_, vocab_size=vocab_size, **kw)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="module", params=[(t, v, f) for t, v in TYPES_AND_SIZES for f in ("causal", "masked")],
                ids=lambda p: f"{p[0]}-{p[2]}")
def trained(request: pytest.FixtureRequest, corpus: list[str], tmp_path_factory: pytest.TempPathFactory):
    type_, vocab_size, family = request.param
    cfg = cfg_for(type_, vocab_size, min_frequency=1, special_tokens=["<extra>"])
    tok = train_tokenizer(iter(corpus), cfg, family)
    out = save_tokenizer(tok, tmp_path_factory.mktemp(f"{type_}-{family}"))
    return cfg, family, tok, out


# --- training, saving, reloading -------------------------------------------------------------------


def test_trains_within_vocab_size_and_reloads_identically(trained, corpus: list[str]) -> None:
    cfg, family, tok, out = trained
    assert len(tok) <= cfg.vocab_size
    assert (out / "tokenizer.json").is_file()
    again = load_tokenizer(str(out))
    samples = corpus[:20] + [text for text in TRICKY if text]
    assert again(samples)["input_ids"] == tok(samples)["input_ids"]
    assert again.all_special_tokens == tok.all_special_tokens
    assert again.model_max_length == cfg.model_max_length
    assert again.pad_token_id == tok.pad_token_id is not None


def test_special_tokens_by_family(trained) -> None:
    cfg, family, tok, _ = trained
    named = CAUSAL_SPECIAL_TOKENS if family == "causal" else MASKED_SPECIAL_TOKENS
    for attr, token in named.items():
        assert getattr(tok, attr) == token
        assert getattr(tok, f"{attr}_id") == tok.convert_tokens_to_ids(token)
    # Named specials take the first ids, in a fixed order; extras follow.
    distinct = list(dict.fromkeys(named.values()))
    assert tok.convert_tokens_to_ids(distinct) == list(range(len(distinct)))
    assert "<extra>" in tok.all_special_tokens
    assert tok.convert_tokens_to_ids("<extra>") == len(distinct)
    assert tok.tokenize("a <extra> b").count("<extra>") == 1  # never split into pieces


def test_causal_adds_nothing_masked_adds_cls_sep(trained) -> None:
    cfg, family, tok, out = trained
    ids = tok("the cat sat")["input_ids"]
    if family == "causal":
        assert ids == tok("the cat sat", add_special_tokens=False)["input_ids"]
        return
    for t in (tok, load_tokenizer(str(out))):
        enc = t("the cat", "a dog")
        tokens = t.convert_ids_to_tokens(enc["input_ids"])
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens.count("[SEP]") == 2
        first_sep = tokens.index("[SEP]")
        assert enc["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(tokens) - first_sep - 1)


def test_batches_pad(trained) -> None:
    _, _, tok, _ = trained
    batch = tok(["the cat", "the big red dog sat on a mat"], padding=True)
    assert len(batch["input_ids"][0]) == len(batch["input_ids"][1])
    assert batch["input_ids"][0][-1] == tok.pad_token_id
    assert batch["attention_mask"][0][-1] == 0


@pytest.mark.parametrize("type_", ["bpe", "char"])
def test_exact_round_trip(corpus: list[str], type_: str) -> None:
    size = dict(TYPES_AND_SIZES)[type_]
    tok = train_tokenizer(iter(corpus), cfg_for(type_, size, min_frequency=1))
    for text in TRICKY:
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text


def test_bpe_round_trips_text_it_never_saw(corpus: list[str]) -> None:
    tok = train_tokenizer(iter(corpus), cfg_for("bpe", 400))
    unseen = "Ωμέγα ∑ ☃ \u200b zero-width, \r\n CRLF, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and 🧑‍🚀"
    assert tok.decode(tok(unseen)["input_ids"]) == unseen


def test_char_is_one_token_per_character_and_maps_unseen_to_unk(corpus: list[str]) -> None:
    tok = train_tokenizer(iter(corpus), cfg_for("char", 60, min_frequency=1))
    assert tok.tokenize("a b\t") == ["a", " ", "b", "\t"]
    a, b = tok.convert_tokens_to_ids(["a", "b"])
    assert tok("a☃b")["input_ids"] == [a, tok.unk_token_id, b]


def test_char_vocab_size_keeps_most_frequent_characters(corpus: list[str]) -> None:
    tok = train_tokenizer(iter(corpus), cfg_for("char", 13, min_frequency=1))  # 3 specials + 10 chars
    assert len(tok) == 13
    assert {" ", "e", "a"} <= set(tok.get_vocab())  # the commonest characters of the corpus
    assert "日" not in tok.get_vocab()


def test_accepts_batches_and_skips_none_and_blank(corpus: list[str]) -> None:
    batches = [corpus[i : i + 50] + [None, "", "   "] for i in range(0, len(corpus), 50)]
    tok, report = train_and_report(iter(batches), cfg_for("wordpiece", 150))
    assert report.train_texts == len(corpus)
    assert report.train_chars == sum(len(text) for text in corpus)
    assert len(tok) <= 150


# --- streaming -----------------------------------------------------------------------------------


class OnePass:
    """An iterable with no length that refuses a second pass (as a huge stream would)."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.passes = 0
        self.pulled = 0

    def __iter__(self) -> Iterator[str]:
        self.passes += 1
        if self.passes > 1:
            raise AssertionError("corpus iterated twice")
        for text in self.texts:
            self.pulled += 1
            yield text


@pytest.mark.parametrize("type_,vocab_size", TYPES_AND_SIZES)
def test_corpus_is_streamed_in_one_pass(corpus: list[str], type_: str, vocab_size: int) -> None:
    stream = OnePass(corpus)
    tok, report = train_and_report(stream, cfg_for(type_, vocab_size))
    assert stream.passes == 1 and stream.pulled == len(corpus)
    assert report.train_texts == len(corpus)
    assert not hasattr(stream, "__len__")


def test_generator_is_consumed_lazily(corpus: list[str]) -> None:
    seen: list[int] = []

    def gen() -> Iterator[str]:
        for i, text in enumerate(corpus):
            seen.append(i)
            yield text

    g = gen()
    assert seen == []  # nothing read before training starts
    train_tokenizer(g, cfg_for("bpe", 300))
    assert seen == list(range(len(corpus)))
    assert next(g, None) is None  # drained, once


# --- report and stats ----------------------------------------------------------------------------


def test_train_and_report(corpus: list[str]) -> None:
    tok, report = train_and_report(iter(corpus[:250]), cfg_for("bpe", 300), "masked", heldout=corpus[250:])
    assert isinstance(report, TokenizerReport)
    assert report.vocab_size == len(tok) <= 300
    assert report.requested_vocab_size == 300 and report.type == "bpe" and report.family == "masked"
    assert report.train_seconds > 0
    assert report.heldout["texts"] == len(corpus) - 250
    assert report.heldout["bytes_per_token"] >= report.heldout["chars_per_token"] > 1.0
    assert set(report.to_dict()) >= {"vocab_size", "train_seconds", "heldout"}


def test_compression_stats_char_is_one_char_per_token(corpus: list[str]) -> None:
    tok = train_tokenizer(iter(corpus), cfg_for("char", 60, min_frequency=1), "masked")
    stats = compression_stats(tok, ["abc", "the cat", "é"])  # [CLS]/[SEP] must not be counted
    assert stats["tokens"] == stats["chars"] == 11
    assert stats["bytes"] == 12  # "é" is two bytes in UTF-8
    assert stats["chars_per_token"] == 1.0
    assert stats["bytes_per_token"] == pytest.approx(12 / 11)


def test_compression_stats_empty_input(corpus: list[str]) -> None:
    tok = train_tokenizer(iter(corpus), cfg_for("char", 60))
    assert compression_stats(tok, iter([])) == {
        "texts": 0, "tokens": 0, "chars": 0, "bytes": 0, "chars_per_token": 0.0, "bytes_per_token": 0.0
    }


def test_iter_texts_streams_a_dataset_column(corpus: list[str]) -> None:
    datasets = pytest.importorskip("datasets")
    rows = corpus[:25] + [None, "", "  "]
    ds = datasets.Dataset.from_dict({"text": rows, "label": list(range(len(rows)))})
    batches = list(iter_texts(ds, batch_size=10))
    assert all(isinstance(b, list) and len(b) <= 10 for b in batches)
    assert [t for b in batches for t in b] == corpus[:25]
    tok = train_tokenizer(iter_texts(ds, batch_size=10), cfg_for("char", 60))
    assert len(tok) <= 60
    with pytest.raises(DataError, match="column 'body' not found.*text, label"):
        next(iter_texts(ds, column="body"))


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("texts", [[], ["", "   ", "\n\t"], [None, ["  ", None]]], ids=["empty", "blank", "none"])
def test_empty_corpus(texts: list) -> None:
    with pytest.raises(DataError, match="^the corpus is empty"):
        train_tokenizer(iter(texts), cfg_for("bpe", 300))


@pytest.mark.parametrize(
    "type_,family,minimum,parts",
    [
        ("bpe", "masked", 261, "256 bytes + 5 special tokens"),
        ("bpe", "causal", 259, "256 bytes + 3 special tokens"),
        ("char", "causal", 4, "3 special tokens + 1 character"),
        ("wordpiece", "masked", 21, "5 special tokens + 16"),
        ("unigram", "causal", 19, "3 special tokens + 16"),
    ],
)
def test_vocab_too_small_names_the_minimum(type_: str, family: str, minimum: int, parts: str) -> None:
    cfg = cfg_for(type_, minimum - 1)
    assert min_vocab_size(cfg, family) == minimum
    with pytest.raises(ConfigError) as info:
        train_tokenizer(iter(["never read"]), cfg, family)
    message = str(info.value)
    assert f"vocab_size {minimum - 1} is too small" in message
    assert parts in message and f"--vocab-size {minimum} or more" in message
    assert "\n" not in message


def test_vocab_minimum_counts_extra_special_tokens() -> None:
    cfg = cfg_for("bpe", 262, special_tokens=["<a>", "<b>", "[PAD]"])  # [PAD] is already a masked special
    assert min_vocab_size(cfg, "masked") == 256 + 7
    with pytest.raises(ConfigError, match="at least 263"):
        train_tokenizer(iter(["x"]), cfg, "masked")


def test_unigram_vocab_smaller_than_the_alphabet(corpus: list[str]) -> None:
    with pytest.raises(ConfigError, match="too small for a unigram tokenizer on this corpus"):
        train_tokenizer(iter(corpus), cfg_for("unigram", 25))


def test_load_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ModelError, match=f"^tokenizer folder not found: {missing}"):
        load_tokenizer(str(missing))


def test_load_folder_without_tokenizer_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no tokenizer files in .*tokenizer.json.*llmtune tokenizer train"):
        load_tokenizer(str(tmp_path))


def test_load_file_instead_of_folder(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text("{}")
    with pytest.raises(ModelError, match="is a file, not a folder"):
        load_tokenizer(str(path))


def test_load_hub_id_offline_fails_fast_and_clearly() -> None:
    with pytest.raises(ModelError, match="tokenizer 'some-org/some-tokenizer' is not a local path.*offline"):
        load_tokenizer("some-org/some-tokenizer")


def test_unknown_family() -> None:
    with pytest.raises(ConfigError, match="unknown model family"):
        train_tokenizer(iter(["x"]), cfg_for("char", 60), "seq2seq")  # type: ignore[arg-type]
