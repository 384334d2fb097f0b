"""Language-model tasks on plain text: causal LM (GPT-2/Llama) and masked LM (BERT).

Documents are tokenized, joined with a separator (EOS for causal, [SEP] for masked) and packed into
fixed-length blocks, so no compute is spent on padding. ``Dataset.map`` caches the result by
fingerprint (data + this function + tokenizer + block size): a rerun does not tokenize again.

Each block carries ``n_chars``/``n_bytes``: its share of the characters/bytes of the text it came from
(the batch's chars-per-token ratio times the block length). Their sums over a split give the
tokens-per-character ratio used to turn loss (nats/token) into bits per character and per byte, which
do not depend on the tokenizer, so runs with different tokenizers compare.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from llmtune.tasks.base import ColumnSpec

MAP_BATCH_SIZE = 1000


def pack_blocks(
    batch: dict[str, list[Any]], tokenizer: Any, block_size: int, masked: bool = False, text_column: str = "text"
) -> dict[str, list[Any]]:
    """Tokenize a batch of documents and pack it into blocks of ``block_size`` tokens.

    The tail that does not fill a whole block is dropped (at most one block per map batch of
    ``MAP_BATCH_SIZE`` documents). Masked-LM blocks are wrapped as ``[CLS] ... [SEP]``.
    """
    texts = [t for t in batch[text_column] if t and t.strip()]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    sep = tokenizer.sep_token_id if masked else tokenizer.eos_token_id
    assert sep is not None, "the tokenizer needs an eos (causal) or sep (masked) token"
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

    def __init__(self, masked: bool, mlm_probability: float = 0.15) -> None:
        self.masked = masked
        self.mlm_probability = mlm_probability
        self.name = "masked_lm" if masked else "causal_lm"

    def preprocess(self, dataset: Any, tokenizer: Any, block_size: int, desc: str = "packing") -> Any:
        """Tokenize and pack ``dataset`` (cached by the datasets fingerprint)."""
        return dataset.map(
            pack_blocks,
            batched=True,
            batch_size=MAP_BATCH_SIZE,
            remove_columns=dataset.column_names,
            fn_kwargs={"tokenizer": tokenizer, "block_size": block_size, "masked": self.masked},
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
