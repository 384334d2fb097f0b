"""Language-model tasks on plain text: causal LM (GPT-2/Llama) and masked LM (BERT).

Documents are tokenized, joined with a separator (EOS for causal, [SEP] for masked) and packed into
fixed-length blocks, so no compute is spent on padding. ``Dataset.map`` caches the result by
fingerprint (data + this function + tokenizer content + block size): a rerun does not tokenize again.

Each block carries ``n_chars``/``n_bytes``: its share of the characters/bytes of the text it came from
(the batch's chars-per-token ratio times the block length). Their sums over a split give the
tokens-per-character ratio used to turn loss (nats/token) into bits per character and per byte, which
do not depend on the tokenizer, so runs with different tokenizers compare.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

from llmtune.errors import ConfigError, ModelError
from llmtune.tasks.base import ColumnSpec

MAP_BATCH_SIZE = 1000
DEFAULT_MLM_PROBABILITY = 0.15  # BERT's rate


def check_tokenizer(tokenizer: Any, masked: bool) -> None:
    """Refuse a tokenizer that lacks the special tokens packing and masking need.

    Raises:
        ModelError: Causal LM without an eos token, or masked LM without cls/sep/mask tokens.
    """
    needed = ("cls_token", "sep_token", "mask_token") if masked else ("eos_token",)
    missing = [name for name in needed if getattr(tokenizer, f"{name}_id", None) is None]
    if missing:
        kind = "a masked LM (bert)" if masked else "a causal LM (gpt2/llama)"
        raise ModelError(
            f"the tokenizer has no {', '.join(missing)}, which {kind} needs to separate documents"
            f"{' and mask tokens' if masked else ''}; pass a tokenizer trained for that family or omit --tokenizer "
            "to train one"
        )


def pack_blocks(
    batch: dict[str, list[Any]], tokenizer: Any, block_size: int, masked: bool = False, text_column: str = "text"
) -> dict[str, list[Any]]:
    """Tokenize a batch of documents and pack it into blocks of ``block_size`` tokens.

    The tail that does not fill a whole block is dropped (at most one block per map batch of
    ``MAP_BATCH_SIZE`` documents). Masked-LM blocks are wrapped as ``[CLS] ... [SEP]``.

    ``n_chars``/``n_bytes`` spread the batch's characters/bytes (each document counting one more
    for its separator, which stands for the newline between documents) evenly over its tokens, so
    their sums over the kept blocks are ``kept tokens x chars (bytes) per token`` of the batch.
    """
    texts = [t for t in batch[text_column] if t and t.strip()]
    if not texts:  # a batch of blank rows: the tokenizer refuses an empty list
        return {"input_ids": [], "n_chars": [], "n_bytes": []}
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    sep = tokenizer.sep_token_id if masked else tokenizer.eos_token_id
    assert sep is not None, "check_tokenizer() first: packing needs an eos (causal) or sep (masked) token"
    stream: list[int] = []
    for seq in ids:
        stream.extend(seq)
        stream.append(sep)
    inner = block_size - 2 if masked else block_size
    n_blocks = len(stream) // inner
    chars = sum(len(t) + 1 for t in texts)  # +1: the separator stands for a newline
    nbytes = sum(len(t.encode("utf-8")) + 1 for t in texts)
    chars_per_token = chars / max(len(stream), 1)
    bytes_per_token = nbytes / max(len(stream), 1)
    blocks = [stream[i * inner : (i + 1) * inner] for i in range(n_blocks)]
    if masked:
        blocks = [[tokenizer.cls_token_id, *b, tokenizer.sep_token_id] for b in blocks]
    return {
        "input_ids": blocks,
        "n_chars": [inner * chars_per_token] * n_blocks,
        "n_bytes": [inner * bytes_per_token] * n_blocks,
    }


def pack_fingerprint(dataset: Any, tokenizer: Any, block_size: int, masked: bool) -> Optional[str]:
    """The cache key for packing ``dataset``: its fingerprint, the tokenizer's content, the settings.

    The tokenizer enters by what it does (its serialized fast backend and separator ids), not as a
    pickled Python object: pickles carry the folder it was loaded from and other state, so the same
    vocabulary trained in-process, reloaded to resume, or read from another folder would never hit
    the cache. ``pack_blocks`` itself is hashed too, so changing it invalidates old caches.

    Returns:
        A fingerprint for ``Dataset.map(new_fingerprint=...)``, or None (datasets then hashes the
        arguments itself) for slow tokenizers or datasets without a fingerprint.
    """
    from datasets.fingerprint import Hasher

    data_fingerprint = getattr(dataset, "_fingerprint", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if data_fingerprint is None or backend is None:
        return None
    separators = (tokenizer.eos_token_id, tokenizer.sep_token_id, tokenizer.cls_token_id)
    settings = (separators, block_size, masked, MAP_BATCH_SIZE)
    return Hasher.hash((data_fingerprint, backend.to_str(), settings, pack_blocks))


def text_units_per_token(dataset: Any, block_size: int, masked: bool = False) -> dict[str, float]:
    """Characters and bytes per (real) token over a packed split."""
    inner = block_size - 2 if masked else block_size
    n_tokens = inner * len(dataset)
    if n_tokens == 0:
        return {"chars_per_token": math.nan, "bytes_per_token": math.nan}
    return {
        "chars_per_token": float(sum(dataset["n_chars"])) / n_tokens,
        "bytes_per_token": float(sum(dataset["n_bytes"])) / n_tokens,
    }


def lm_eval_metrics(eval_loss: float, units: dict[str, float]) -> dict[str, float]:
    """Perplexity and bits per character/byte from a mean loss in nats per token."""
    loss = float(eval_loss)
    ln2 = math.log(2)
    return {
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "bits_per_token": loss / ln2,
        "bits_per_char": loss / ln2 / units["chars_per_token"],
        "bits_per_byte": loss / ln2 / units["bytes_per_token"],
    }


class LanguageModelTask:
    """Causal or masked language modelling on packed blocks of plain text."""

    columns = ColumnSpec(required=("text",))

    def __init__(self, masked: bool, mlm_probability: float = DEFAULT_MLM_PROBABILITY) -> None:
        if not 0 < mlm_probability < 1:
            raise ConfigError(f"mlm_probability {mlm_probability} must be between 0 and 1 (BERT uses 0.15)")
        self.masked = masked
        self.mlm_probability = mlm_probability
        self.name = "masked_lm" if masked else "causal_lm"

    def preprocess(
        self, dataset: Any, tokenizer: Any, block_size: int, desc: str = "packing", num_proc: Optional[int] = None
    ) -> Any:
        """Tokenize and pack ``dataset``.

        The result is cached next to the source's Arrow files under ``pack_fingerprint`` (data,
        tokenizer content, block size, mode): a rerun with the same data and tokenizer loads it (same
        ``cache_files``) instead of tokenizing again, and a change to any of them writes a new one.
        In-memory datasets have no cache files and are packed every time.

        Args:
            dataset: Rows with a ``text`` column.
            tokenizer: The tokenizer (its special tokens are checked with ``check_tokenizer``).
            block_size: Tokens per block (the model's sequence length).
            desc: Progress-bar label.
            num_proc: Worker processes for large datasets (None: this process).

        Raises:
            ModelError: The tokenizer lacks a special token the task needs.
        """
        check_tokenizer(tokenizer, self.masked)
        return dataset.map(
            pack_blocks,
            batched=True,
            batch_size=MAP_BATCH_SIZE,
            remove_columns=dataset.column_names,
            fn_kwargs={"tokenizer": tokenizer, "block_size": block_size, "masked": self.masked},
            num_proc=num_proc,
            new_fingerprint=pack_fingerprint(dataset, tokenizer, block_size, self.masked),
            desc=desc,
        )

    def collator(self, tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        """Causal: labels = inputs (the model shifts). Masked: dynamic masking each batch."""
        from transformers import DataCollatorForLanguageModeling

        inner = DataCollatorForLanguageModeling(
            tokenizer, mlm=self.masked, mlm_probability=self.mlm_probability if self.masked else 0.15
        )

        def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
            return inner([{"input_ids": f["input_ids"]} for f in features])

        return collate
