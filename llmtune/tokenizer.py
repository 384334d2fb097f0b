"""Train, save, load and measure tokenizers.

Training streams the corpus into a ``tokenizers`` trainer (``train_from_iterator``) and wraps the
result in a ``transformers.PreTrainedTokenizerFast`` so the rest of the stack (datasets ``map``,
collators, Trainer, ``save_pretrained``/``AutoTokenizer``) can use it like any hub tokenizer.

Four algorithms (``TokenizerConfig.type``):

* ``bpe``: byte-level BPE (GPT-2 style). Every string round-trips exactly, no unknown tokens.
* ``wordpiece``: BERT style, *cased*: ``BertNormalizer(lowercase=False, strip_accents=False)`` keeps
  case and accents because dropping them loses information a user cannot get back; the alphabet is
  capped at ``min(1000, (vocab_size - specials) // 2)`` so the vocabulary stays within vocab_size.
* ``unigram``: SentencePiece-style Unigram with the Metaspace (``▁``) pre-tokenizer and decoder;
  ``min_frequency`` does not apply (the Unigram trainer has no such option).
* ``char``: one token per character seen in the corpus (the ``vocab_size`` most frequent ones that
  occur at least ``min_frequency`` times); others map to the unk token. Round-trips exactly.

Special tokens depend on the model family (``CAUSAL_SPECIAL_TOKENS`` / ``MASKED_SPECIAL_TOKENS``):

* causal (GPT-2 style): ``<|endoftext|>`` is both bos and eos, ``<|pad|>`` pads, ``<|unk|>`` is
  unk; ids 0, 1, 2. Nothing is added on encode: language-model data prep appends eos itself.
* masked (BERT style): ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4; encoding
  gives ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` with token_type_ids.

``TokenizerConfig.special_tokens`` are reserved right after these (extra special tokens).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, Optional, Union

from llmtune import hub
from llmtune.config.schema import TokenizerConfig
from llmtune.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:  # transformers takes ~1.5 s to import: only the functions that need it do
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

Family = Literal["causal", "masked"]
# Items of a corpus: single texts, or batches of texts as ``iter_texts`` yields them.
TextItem = Union[str, Iterable[Optional[str]], None]

CAUSAL_SPECIAL_TOKENS: dict[str, str] = {
    "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "pad_token": "<|pad|>", "unk_token": "<|unk|>"
}
MASKED_SPECIAL_TOKENS: dict[str, str] = {
    "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"
}
# Files whose presence makes a folder loadable by AutoTokenizer (fast or slow formats).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")
_BYTE_ALPHABET = 256
# Below this many learned entries a wordpiece/unigram vocabulary cannot even hold the letters.
_MIN_LEARNED = 16
_MAX_WORDPIECE_ALPHABET = 1000  # BERT's own default limit_alphabet
_ENCODE_BATCH = 1000


@dataclass
class TokenizerReport:
    """What ``train_and_report`` measured."""

    type: str  # bpe, wordpiece, unigram or char
    family: str  # causal or masked
    requested_vocab_size: int  # cfg.vocab_size
    vocab_size: int  # trained vocabulary, special tokens included
    train_seconds: float  # wall clock of training, streaming the corpus included
    train_texts: int  # non-blank texts the trainer saw
    train_chars: int
    heldout: dict[str, float] = field(default_factory=dict)  # compression_stats on held-out texts

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON reports."""
        return asdict(self)


class _Corpus:
    """Single-pass view of the user's texts: flattens batches, skips blank texts, counts them."""

    def __init__(self, texts: Iterable[TextItem]) -> None:
        self._items = iter(texts)
        self.texts = 0
        self.chars = 0

    def __iter__(self) -> Iterator[str]:
        for text in _flatten(self._items):
            if text.isspace():
                continue
            self.texts += 1
            self.chars += len(text)
            yield text


def _flatten(items: Iterable[TextItem]) -> Iterator[str]:
    """Yield the non-empty strings of ``items``, whether they come one by one or in batches."""
    for item in items:
        batch = (item,) if item is None or isinstance(item, str) else item
        for text in batch:
            if isinstance(text, str) and text:
                yield text


def special_tokens_for(family: Family, extra: Optional[list[str]] = None) -> tuple[dict[str, str], list[str]]:
    """The named special tokens of ``family`` and the full ordered list to reserve.

    Args:
        family: ``causal`` or ``masked``.
        extra: ``cfg.special_tokens``; duplicates of the named tokens are dropped.

    Returns:
        ``(named, ordered)``: attribute -> token (e.g. ``pad_token``), and every distinct special
        token in id order (named first, then ``extra``).
    """
    if family not in ("causal", "masked"):
        raise ConfigError(f"unknown model family '{family}'; use causal or masked")
    named = dict(CAUSAL_SPECIAL_TOKENS if family == "causal" else MASKED_SPECIAL_TOKENS)
    ordered = list(dict.fromkeys([*named.values(), *(extra or [])]))
    return named, ordered


def min_vocab_size(cfg: TokenizerConfig, family: Family = "causal") -> int:
    """Smallest ``vocab_size`` the tokenizer type can honour with this family's special tokens."""
    n_special = len(special_tokens_for(family, cfg.special_tokens)[1])
    if cfg.type == "bpe":
        return _BYTE_ALPHABET + n_special
    if cfg.type == "char":
        return n_special + 1
    return n_special + _MIN_LEARNED


def _check_vocab_size(cfg: TokenizerConfig, family: Family) -> None:
    minimum = min_vocab_size(cfg, family)
    if cfg.vocab_size >= minimum:
        return
    n_special = len(special_tokens_for(family, cfg.special_tokens)[1])
    what, parts = {
        "bpe": ("a byte-level BPE", f"{_BYTE_ALPHABET} bytes + {n_special} special tokens"),
        "char": ("a character-level", f"{n_special} special tokens + 1 character"),
    }.get(cfg.type, (f"a {cfg.type}", f"{n_special} special tokens + {_MIN_LEARNED} learned pieces"))
    raise ConfigError(
        f"vocab_size {cfg.vocab_size} is too small for {what} tokenizer: it needs at least {minimum} "
        f"({parts}); pass --vocab-size {minimum} or more"
    )


def _build_backend(cfg: TokenizerConfig, specials: list[str], unk: str) -> tuple[Any, Any]:
    """An untrained ``tokenizers.Tokenizer`` for ``cfg.type`` and the trainer that fills it."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    common = {"vocab_size": cfg.vocab_size, "special_tokens": specials, "show_progress": False}
    if cfg.type == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        # All 256 byte symbols up front: any text is encodable and the vocab never needs unk.
        trainer = trainers.BpeTrainer(
            min_frequency=cfg.min_frequency, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **common
        )
    elif cfg.type == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=unk))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        # Each alphabet character can enter twice ("a" and "##a"): half the budget keeps vocab <= size.
        alphabet = min(_MAX_WORDPIECE_ALPHABET, (cfg.vocab_size - len(specials)) // 2)
        trainer = trainers.WordPieceTrainer(
            min_frequency=cfg.min_frequency, limit_alphabet=alphabet, continuing_subword_prefix="##", **common
        )
    elif cfg.type == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(unk_token=unk, **common)
    elif cfg.type == "char":
        tok = Tokenizer(models.WordLevel(unk_token=unk))
        # "[\s\S]" matches any one character, newlines included, in every regex dialect.
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()  # join characters back with nothing in between
        trainer = trainers.WordLevelTrainer(min_frequency=cfg.min_frequency, **common)
    else:
        raise ConfigError(f"unknown tokenizer type '{cfg.type}'; use bpe, wordpiece, unigram or char")
    return tok, trainer


def _post_processor(backend: Any, cfg: TokenizerConfig, family: Family) -> Any:
    """What ``encode`` adds around the pieces: [CLS]/[SEP] for masked models, nothing for causal."""
    from tokenizers import processors

    if family == "masked":
        cls, sep = MASKED_SPECIAL_TOKENS["cls_token"], MASKED_SPECIAL_TOKENS["sep_token"]
        template = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))],
        )
    else:
        template = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
    if cfg.type == "bpe":
        # Trim the leading "Ġ" space out of offsets so character spans (QA answers) stay tight.
        return processors.Sequence([processors.ByteLevel(trim_offsets=True), template])
    return template


def _train_backend(texts: Iterable[TextItem], cfg: TokenizerConfig, family: Family) -> tuple[Any, _Corpus]:
    """Train the raw ``tokenizers.Tokenizer``; return it with the corpus counters."""
    _check_vocab_size(cfg, family)
    named, specials = special_tokens_for(family, cfg.special_tokens)
    backend, trainer = _build_backend(cfg, specials, named["unk_token"])
    corpus = _Corpus(texts)
    stream = iter(corpus)
    first = next(stream, None)  # peek: an empty corpus would otherwise "train" a useless vocab
    if first is None:
        raise DataError(
            "the corpus is empty (no non-blank texts); point the data source at a file or dataset "
            "with text, or pick the right text column (data.text_column)"
        )
    try:
        backend.train_from_iterator(itertools.chain([first], stream), trainer=trainer)
    except Exception as exc:  # the Rust trainers raise plain Exception
        if "not large enough" in str(exc):
            raise ConfigError(
                f"vocab_size {cfg.vocab_size} is too small for a {cfg.type} tokenizer on this corpus: "
                f"it must hold every distinct character; pass a larger --vocab-size"
            ) from exc
        raise
    backend.post_processor = _post_processor(backend, cfg, family)
    return backend, corpus


def _wrap(backend: Any, cfg: TokenizerConfig, family: Family) -> PreTrainedTokenizerFast:
    """Wrap a trained backend so transformers code (and ``AutoTokenizer`` after saving) can use it."""
    from transformers import PreTrainedTokenizerFast

    named, specials = special_tokens_for(family, cfg.special_tokens)
    extra = [tok for tok in specials if tok not in named.values()]
    inputs = ["input_ids", "attention_mask"]
    if family == "masked":  # a generic wrapper drops token_type_ids unless asked; pair tasks need them
        inputs.insert(1, "token_type_ids")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=cfg.model_max_length,
        model_input_names=inputs,
        clean_up_tokenization_spaces=False,  # cleanup rewrites " ." as "." and breaks round-trips
        extra_special_tokens=extra,
        **named,
    )


def train_tokenizer(
    texts: Iterable[TextItem], cfg: TokenizerConfig, family: Family = "causal"
) -> PreTrainedTokenizerFast:
    """Train a tokenizer on a stream of texts.

    Args:
        texts: The corpus, one pass, never held in memory: strings, or batches (lists) of strings
            as ``iter_texts`` yields. None, empty and whitespace-only texts are skipped.
        cfg: Algorithm, vocabulary size, minimum frequency, extra special tokens, max length.
        family: ``causal`` (GPT-style special tokens) or ``masked`` (BERT-style, with [CLS]/[SEP]).

    Returns:
        A fast tokenizer with pad/unk (and bos/eos or cls/sep/mask) set.

    Raises:
        ConfigError: ``vocab_size`` is below what the type needs.
        DataError: The corpus holds no non-blank text.
    """
    backend, _ = _train_backend(texts, cfg, family)
    return _wrap(backend, cfg, family)


def train_and_report(
    texts: Iterable[TextItem], cfg: TokenizerConfig, family: Family = "causal", heldout: Optional[Iterable[str]] = None
) -> tuple[PreTrainedTokenizerFast, TokenizerReport]:
    """Train like ``train_tokenizer`` and measure the run.

    Args:
        texts: Training corpus (see ``train_tokenizer``).
        cfg: Tokenizer settings.
        family: ``causal`` or ``masked``.
        heldout: Texts not used for training, for an honest compression figure (optional).

    Returns:
        The tokenizer and a ``TokenizerReport``.
    """
    start = time.perf_counter()
    backend, corpus = _train_backend(texts, cfg, family)
    seconds = time.perf_counter() - start
    tok = _wrap(backend, cfg, family)
    stats = compression_stats(tok, heldout) if heldout is not None else {}
    return tok, TokenizerReport(
        cfg.type, family, cfg.vocab_size, len(tok), seconds, corpus.texts, corpus.chars, stats
    )


def save_tokenizer(tok: PreTrainedTokenizerBase, out_dir: Union[str, Path]) -> Path:
    """Write ``tok`` with ``save_pretrained`` (reloadable with ``AutoTokenizer.from_pretrained``).

    Args:
        tok: The tokenizer.
        out_dir: Folder to write; created if missing.

    Returns:
        The folder as a Path.
    """
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(path))
    return path


def _load_local(path: Path, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    if not path.exists():
        raise ModelError(
            f"tokenizer folder not found: {path}; pass a folder written by `llmtune tokenizer train` "
            f"or save_pretrained, or a hub id"
        )
    if not path.is_dir():
        raise ModelError(f"tokenizer path {path} is a file, not a folder; pass the folder that holds it")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(
            f"no tokenizer files in {path}: expected one of {', '.join(TOKENIZER_FILES)}; "
            f"train one with `llmtune tokenizer train` or pass another folder"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load the tokenizer in {path}: {reason}") from exc


def _load_hub(name: str, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    hub.require_hub(name, "tokenizer")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except OSError as exc:
        if hub.hub_offline():
            raise hub.unreachable_error(name, "tokenizer") from exc
        raise ModelError(
            f"tokenizer '{name}' could not be loaded from the Hub; check the id, or pass a local folder"
        ) from exc


def load_tokenizer(path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local folder or a hub id.

    Args:
        path: A folder written by ``save_tokenizer``/``save_pretrained``, or a hub id (``gpt2``,
            ``org/name``). A string that does not exist locally and has that shape is taken as an id.
        trust_remote_code: Allow custom tokenizer code from the hub.

    Returns:
        The tokenizer ``AutoTokenizer`` picks.

    Raises:
        ModelError: The folder is missing or holds no tokenizer files, or the hub id cannot be loaded.
    """
    if hub.looks_like_local_path(path):
        return _load_local(Path(path).expanduser(), trust_remote_code)
    return _load_hub(path, trust_remote_code)


def compression_stats(tok: PreTrainedTokenizerBase, texts: Iterable[TextItem]) -> dict[str, float]:
    """How much text one token carries, special tokens excluded.

    Args:
        tok: Any transformers tokenizer.
        texts: Strings or batches of strings; None and empty ones are skipped.

    Returns:
        ``texts``, ``tokens``, ``chars``, ``bytes`` (UTF-8) and the ratios ``chars_per_token`` and
        ``bytes_per_token`` (0.0 when there were no tokens).
    """
    totals = {"texts": 0, "tokens": 0, "chars": 0, "bytes": 0}
    stream = _flatten(texts)
    while batch := list(itertools.islice(stream, _ENCODE_BATCH)):  # batch for the fast backend's speed
        ids = tok(batch, add_special_tokens=False)["input_ids"]
        totals["texts"] += len(batch)
        totals["tokens"] += sum(len(seq) for seq in ids)
        totals["chars"] += sum(len(text) for text in batch)
        totals["bytes"] += sum(len(text.encode("utf-8")) for text in batch)
    n_tokens = totals["tokens"]
    return {
        **totals,
        "chars_per_token": totals["chars"] / n_tokens if n_tokens else 0.0,
        "bytes_per_token": totals["bytes"] / n_tokens if n_tokens else 0.0,
    }


def iter_texts(dataset: Any, column: str = "text", batch_size: int = 1000) -> Iterator[list[str]]:
    """Stream one text column of a ``datasets.Dataset`` (or ``IterableDataset``) in batches.

    Args:
        dataset: The dataset.
        column: Column holding the text.
        batch_size: Rows read per batch.

    Yields:
        Lists of non-blank strings (None and whitespace-only rows dropped), ready for
        ``train_tokenizer``.

    Raises:
        DataError: The column does not exist.
    """
    names = getattr(dataset, "column_names", None)
    if names is not None and column not in names:
        raise DataError(
            f"column '{column}' not found; the dataset has: {', '.join(names)}; set data.text_column"
        )
    # Reading only the text column avoids decoding the other columns of every row.
    rows = dataset.select_columns([column]) if names is not None else dataset
    for batch in rows.iter(batch_size=batch_size):
        texts = [text for text in batch[column] if isinstance(text, str) and text.strip()]
        if texts:
            yield texts
