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
from pathlib import Path
from typing import Any, Callable, Optional

from llmtune.config.schema import RunConfig
from llmtune.errors import ConfigError, DataError, ModelError
from llmtune.modeling import IGNORE
from llmtune.tasks.base import MAP_BATCH_SIZE, Record
from llmtune.tasks.registry import TASKS
from llmtune.tasks.scoring import causal_nll, fixed_mask, masked_nll, nll_totals, token_stream, window_features

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

    columns = TASKS["causal_lm"].columns

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


class LanguageModelEval:
    """Loss, perplexity and bits per character/byte over a whole text split (see the module docstring)."""

    name = "lm"
    columns = TASKS["lm"].columns

    def __init__(self, cfg: RunConfig, masked: bool) -> None:
        self.cfg = cfg
        self.masked = masked
        self.auto_class = "AutoModelForMaskedLM" if masked else "AutoModelForCausalLM"
        self.notes: list[str] = []
        self.features: Any = None
        self.units: dict[str, float] = {}

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Causal: an eos token to join documents; masked: cls/sep/mask."""
        check_tokenizer(tokenizer, self.masked)

    def prepare(self, rows: Any, tokenizer: Any, max_length: int, where: str) -> None:
        """Sliding windows over the token stream (causal) or fixed-mask blocks (masked)."""
        if self.masked:
            self._prepare_masked(rows, tokenizer, max_length, where)
            return
        from datasets import Dataset

        stream, chars, nbytes = token_stream(rows["text"], tokenizer)
        if len(stream) < 2:
            raise DataError(f"{where} holds no text to score; check --text-column")
        stride = min(self.cfg.eval.stride or max(1, max_length // 2), max_length - 1)
        self.units = {"tokens": len(stream) - 1, "chars": chars, "bytes": nbytes}
        self.features = Dataset.from_dict(window_features(stream, max_length, stride))
        self.notes.append(f"causal LM: {len(stream) - 1:,} tokens ({chars:,} characters) scored with a sliding window "
                          f"of {max_length} tokens moving by {stride} (each token scored once, with at least "
                          f"{max_length - stride} tokens of context after the first window)")

    def _prepare_masked(self, rows: Any, tokenizer: Any, block_size: int, where: str) -> None:
        p, seed = self.cfg.train.mlm_probability, self.cfg.train.seed
        blocks = LanguageModelTask(masked=True).preprocess(rows, tokenizer, block_size, desc="packing")
        if len(blocks) == 0:
            raise DataError(f"{where} is shorter than one block of {block_size} tokens; add text or lower "
                            "--set train.max_length")
        self.units = text_units_per_token(blocks, block_size, masked=True)
        self.features = blocks.map(fixed_mask, with_indices=True, batched=True, remove_columns=blocks.column_names,
                                   fn_kwargs={"tokenizer": tokenizer, "probability": p, "seed": seed},
                                   desc="masking")
        self.notes.append(f"masked LM: pseudo-perplexity would cost one forward pass per token, so the loss is the MLM "
                          f"loss under a fixed {100 * p:g} % mask (80/10/10 replacement, seed {seed}) over "
                          f"{len(blocks):,} blocks of {block_size} tokens; perplexity and bits per character are of "
                          "the masked tokens (compare masked models with each other, not with causal ones)")

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        """Label-padding collator and per-row NLL sums instead of logits."""
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return {"collator": GenerationCollator(pad), "preprocess_logits": masked_nll if self.masked else causal_nll}

    def finish(self, output: Any, out_dir: Path, model: Any, tokenizer: Any) -> tuple[dict[str, Any], list[Record]]:
        """Exact loss, perplexity, bits per token/character/byte; no per-example records."""
        from llmtune.metrics.core import lm_metrics

        total, tokens = nll_totals(output.predictions)
        if tokens == 0:
            raise DataError("no token was scored (the mask chose none); evaluate more text")
        if self.masked:
            loss = total / tokens
            return {"eval_loss": loss, "eval_tokens": tokens,
                    **{f"eval_{k}": v for k, v in lm_eval_metrics(loss, self.units).items()}}, []
        scores = lm_metrics(total, tokens, self.units["chars"], self.units["bytes"])
        return {"eval_tokens": tokens, "eval_chars": self.units["chars"],
                **{f"eval_{k}": v for k, v in scores.items()}}, []


class GenerationCollator:
    """Pad a batch on the right to its longest row (labels with -100).

    Unpacked rows get an attention mask. Packed rows get none (a 2D mask would switch off
    transformers' packed-sequence handling): the padding continues with its own position ids from
    0, so it forms a separate sequence that no real token attends to. ``use_cache=False`` keeps the
    model from building a key/value cache, with which transformers ignores position resets.
    Rows without ``labels`` (packed text blocks) are trained on every token.
    """

    def __init__(self, pad_id: int, packed: bool = False) -> None:
        self.pad_id = pad_id
        self.packed = packed

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "attention_mask": [], "position_ids": []}
        for f in features:
            ids = list(f["input_ids"])
            pad = longest - len(ids)
            batch["input_ids"].append(ids + [self.pad_id] * pad)
            batch["labels"].append(list(f.get("labels", ids)) + [IGNORE] * pad)
            if self.packed:
                positions = f["position_ids"] if "position_ids" in f else range(len(ids))  # eval rows: one example
                batch["position_ids"].append([*positions, *range(pad)])
            else:
                batch["attention_mask"].append([1] * len(ids) + [0] * pad)
        drop = "attention_mask" if self.packed else "position_ids"
        out: dict[str, Any] = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items() if k != drop}
        if self.packed:
            out["use_cache"] = False
        return out


def eval_task(cfg: RunConfig, config: Any) -> LanguageModelEval:
    """The plug-in ``llmtune eval --task lm`` scores with (masked when the model has a masked-LM head)."""
    architectures = [str(a) for a in (getattr(config, "architectures", None) or [])]
    return LanguageModelEval(cfg, masked=any(a.endswith("ForMaskedLM") for a in architectures))
