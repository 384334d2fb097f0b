"""``llmtune eval`` for language models: loss, perplexity and bits per character/byte; generation.

Every adapter here scores tokens the same way: ``token_nll`` runs inside the Trainer's prediction
loop (as ``preprocess_logits_for_metrics``) and keeps, per row, only the summed negative
log-likelihood of its labelled tokens and their count, so no logits are gathered. The sums over the
split give the exact per-token loss (not a mean of batch means) for ``metrics.core.lm_metrics``.

* Causal LMs (``LanguageModelEval``, not masked): the documents are joined into one token stream,
  ``[eos] doc1 [eos] doc2 [eos] ...`` (the same separator as pre-training's packing, and one leading
  eos so the first token is predicted too), and scored with a **sliding window**: windows of
  ``max_length`` tokens that move on by ``stride`` tokens (``--set eval.stride=N``, default half a
  window), each scoring only the tokens no earlier window scored. Every token is scored exactly once
  and, past the first window, with at least ``max_length - stride`` tokens of context; fixed blocks
  (stride = window) would score the first tokens of each block with almost no context and overstate
  the loss. The cost is ``max_length / stride`` forward tokens per scored token (2x by default).
  Each separator stands for the newline between documents, so characters and bytes are
  ``len(doc) + 1`` per document: bits per character are exact, not estimated.
* Masked LMs: pseudo-perplexity (masking every token in turn) costs one forward pass per token, so
  instead the blocks of pre-training (``tasks.lm.pack_blocks``) get a fixed-seed 15 % mask (BERT's
  80/10/10 replacement, seeded per block by ``train.seed`` and the block index, so it does not depend
  on the batch size) and the loss is the MLM loss of the masked tokens. Bits per character scale it
  by the split's characters per token: comparable between masked models, not with causal ones.
* Generation (``GenerationEval``): perplexity of the response tokens given the prompt; with
  ``--generate``, greedy responses scored against the reference (exact match, ROUGE, BLEU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from llmtune.config.schema import RunConfig
from llmtune.errors import DataError
from llmtune.runs.eval_tasks import Record, longest_first, unsort
from llmtune.tasks.base import ColumnSpec

IGNORE = -100


def token_nll(logits: Any, labels: Any, shift: bool = True) -> Any:
    """Per row: summed NLL (nats) of the labelled tokens and their count, a ``(batch, 2)`` tensor.

    Args:
        logits: ``(batch, length, vocab)`` (or a tuple starting with them).
        labels: ``(batch, length)`` token ids, ``-100`` where nothing is scored.
        shift: Causal LMs predict token ``t`` at position ``t - 1`` (masked LMs predict in place).
    """
    import torch
    import torch.nn.functional as F

    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    nll = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    scored = labels != IGNORE
    return torch.stack([(nll * scored).sum(dim=1), scored.sum(dim=1).float()], dim=1)


def causal_nll(logits: Any, labels: Any) -> Any:
    """``token_nll`` for causal LMs (a module-level function, so dataloader workers can pickle it)."""
    return token_nll(logits, labels, shift=True)


def masked_nll(logits: Any, labels: Any) -> Any:
    """``token_nll`` for masked LMs."""
    return token_nll(logits, labels, shift=False)


def nll_totals(predictions: Any) -> tuple[float, int]:
    """Total NLL and scored tokens from ``token_nll`` rows gathered by the Trainer."""
    import numpy as np

    rows = np.asarray(predictions, dtype=np.float64)
    return float(rows[:, 0].sum()), int(round(rows[:, 1].sum()))


# --------------------------------------------------------------------------------------------------
# Language modelling
# --------------------------------------------------------------------------------------------------


def token_stream(texts: Sequence[str], tokenizer: Any) -> tuple[list[int], int, int]:
    """``[eos] doc1 [eos] doc2 [eos] ...`` (blank documents skipped), with its characters and UTF-8 bytes.

    Each document counts one character/byte more: its separator stands for the newline after it.
    """
    from llmtune.tasks.lm import MAP_BATCH_SIZE

    eos = tokenizer.eos_token_id
    docs = [t for t in texts if t and t.strip()]
    stream, chars, nbytes = [eos], 0, 0
    for start in range(0, len(docs), MAP_BATCH_SIZE):
        chunk = docs[start:start + MAP_BATCH_SIZE]
        for doc, ids in zip(chunk, tokenizer(chunk, add_special_tokens=False)["input_ids"]):
            stream += [*ids, eos]
            chars += len(doc) + 1
            nbytes += len(doc.encode("utf-8")) + 1
    return stream, chars, nbytes


def sliding_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, first_scored)`` of each window over a stream of ``n_tokens`` tokens.

    Window ``k`` holds tokens ``[begin, end)`` and scores tokens ``[first_scored, end)``: the first
    window scores everything after its first token, each later one the ``stride`` tokens after the
    previous window's end. Every token but the first is scored exactly once.
    """
    assert 0 < stride < window, "the stride must leave at least one token of context"
    spans, scored_to = [], 1
    while scored_to < n_tokens:
        end = min(n_tokens, window if scored_to == 1 else scored_to + stride)
        spans.append((max(0, end - window), end, scored_to))
        scored_to = end
    return spans


def window_features(stream: Sequence[int], window: int, stride: int) -> dict[str, list[list[int]]]:
    """``input_ids`` and ``labels`` (context positions -100) of every sliding window."""
    ids, labels = [], []
    for begin, end, first in sliding_windows(len(stream), window, stride):
        tokens = list(stream[begin:end])
        ids.append(tokens)
        labels.append([IGNORE] * (first - begin) + tokens[first - begin:])
    return {"input_ids": ids, "labels": labels}


def fixed_mask(batch: dict[str, list[Any]], indices: list[int], tokenizer: Any, probability: float,
               seed: int) -> dict[str, list[Any]]:
    """BERT-style masking with a generator seeded by ``(seed, block index)``: the same mask every run."""
    import numpy as np

    special = np.asarray(tokenizer.all_special_ids)
    out_ids, out_labels = [], []
    for ids, index in zip(batch["input_ids"], indices):
        rng = np.random.default_rng([seed, index])
        ids = np.asarray(ids)
        chosen = (rng.random(ids.size) < probability) & ~np.isin(ids, special)
        roll = rng.random(ids.size)
        masked = ids.copy()
        masked[chosen & (roll < 0.8)] = tokenizer.mask_token_id
        swap = chosen & (roll >= 0.8) & (roll < 0.9)
        masked[swap] = rng.integers(0, len(tokenizer), int(swap.sum()))
        out_ids.append(masked.tolist())
        out_labels.append(np.where(chosen, ids, IGNORE).tolist())
    return {"input_ids": out_ids, "labels": out_labels}


class LanguageModelEval:
    """Loss, perplexity and bits per character/byte over a whole text split (see the module docstring)."""

    name = "lm"
    columns = ColumnSpec(required=("text",))

    def __init__(self, cfg: RunConfig, masked: bool) -> None:
        self.cfg = cfg
        self.masked = masked
        self.auto_class = "AutoModelForMaskedLM" if masked else "AutoModelForCausalLM"
        self.notes: list[str] = []
        self.features: Any = None
        self.units: dict[str, float] = {}

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Causal: an eos token to join documents; masked: cls/sep/mask."""
        from llmtune.tasks.lm import check_tokenizer

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
        from llmtune.tasks.lm import LanguageModelTask, text_units_per_token

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
        from llmtune.tasks.generation import GenerationCollator

        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return {"collator": GenerationCollator(pad), "preprocess_logits": masked_nll if self.masked else causal_nll}

    def finish(self, output: Any, out_dir: Path) -> tuple[dict[str, Any], list[Record]]:
        """Exact loss, perplexity, bits per token/character/byte; no per-example records."""
        from llmtune.metrics.core import lm_metrics
        from llmtune.tasks.lm import lm_eval_metrics

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


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def reference_text(fmt: str, row: dict[str, Any]) -> str:
    """The response a row expects: the completion, the alpaca output or the last assistant message."""
    if fmt == "chat":
        return str(row["messages"][-1].get("content") or "").strip()
    return str(row["output" if fmt == "alpaca" else "completion"] or "").strip()


class GenerationEval:
    """Response perplexity (and, with ``--generate``, exact match / ROUGE / BLEU of greedy responses).

    Rows are rendered and tokenized by the generation task's own ``featurize_batch`` (prompt
    tokens unlabelled, each response closed by eos), so the loss is the one fine-tuning reports,
    summed exactly over response tokens instead of averaged over batches.
    """

    name = "generation"
    auto_class = "AutoModelForCausalLM"
    columns = ColumnSpec(optional=("text", "prompt", "completion", "instruction", "input", "output", "messages"))

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.notes: list[str] = []
        self.features: Any = None
        self.prompts: list[str] = []
        self.references: list[str] = []

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Responses end with eos: the tokenizer needs one."""
        from llmtune.tasks.lm import check_tokenizer

        check_tokenizer(tokenizer, masked=False)

    def prepare(self, rows: Any, tokenizer: Any, max_length: int, where: str) -> None:
        """Render each row (prompt/completion, alpaca or chat), label its response tokens, sort by length.

        Raises:
            DataError: Plain-text rows (use --task lm), rows of no known format, or a bad row.
        """
        from llmtune.tasks.chat_formats import detect_format, prompt_text
        from llmtune.tasks.generation import featurize_batch, special_prefix

        fmt = detect_format(rows.column_names, getattr(self.cfg.data, "format", None), where)
        if fmt == "text":
            raise DataError(f"{where} holds plain text, which has no responses to score; evaluate it with --task lm")
        if fmt == "chat":
            from llmtune.chat_template import ensure_chat_template

            ensure_chat_template(tokenizer)
        kwargs = {"tokenizer": tokenizer, "fmt": fmt, "max_length": max_length, "train_on_prompt": False,
                  "prefix": special_prefix(tokenizer)}
        features = rows.map(featurize_batch, batched=True, with_indices=True, remove_columns=rows.column_names,
                            desc="tokenizing", fn_kwargs=kwargs)
        self.prompts = [prompt_text(fmt, row, tokenizer, i + 1) for i, row in enumerate(rows)]
        self.references = [reference_text(fmt, row) for row in rows]
        truncated = sum(features["truncated"])
        if truncated:
            self.notes.append(f"{truncated} of {len(features)} rows are longer than {max_length} tokens and were cut "
                              "(their response only partly scored); raise --set train.max_length to keep them whole")
        self.notes.append(f"generation ({fmt} rows): perplexity of the response tokens (each closed by eos) given "
                          "the prompt")
        features = features.remove_columns(["truncated", "trained"])
        self.features, self.order = longest_first(features, features["length"])

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        """The generation task's collator and per-row NLL sums."""
        from llmtune.tasks.generation import GenerationCollator

        return {"collator": GenerationCollator(tokenizer.pad_token_id), "preprocess_logits": causal_nll}

    def finish(self, output: Any, out_dir: Path, model: Any = None, tokenizer: Any = None
               ) -> tuple[dict[str, Any], list[Record]]:
        """Response loss/perplexity; with a model (``--generate``) also greedy responses and their scores."""
        from llmtune.metrics.core import lm_metrics

        total, tokens = nll_totals(output.predictions)
        if tokens == 0:
            raise DataError("no response token was scored (every response was cut); raise --set train.max_length")
        scores = lm_metrics(total, tokens)
        metrics: dict[str, Any] = {"eval_response_tokens": tokens, **{f"eval_{k}": v for k, v in scores.items()}}
        rows = unsort(output.predictions.tolist(), self.order)
        records = [{"input": p, "reference": r, "prediction": None, "correct": None, "loss": nll / n if n else None}
                   for p, r, (nll, n) in zip(self.prompts, self.references, rows)]
        if model is not None:
            metrics.update(self._generate(model, tokenizer, records))
        return metrics, records

    def _generate(self, model: Any, tokenizer: Any, records: list[Record]) -> dict[str, float]:
        from llmtune.metrics.overlap import bleu, exact_match, rouge_scores
        from llmtune.runs.generate import generate_records

        g = self.cfg.generate.model_copy(update={"temperature": 0.0, "num_return_sequences": 1})
        batch = self.cfg.train.eval_batch_size or self.cfg.train.batch_size
        generated, _ = generate_records(model, tokenizer, self.prompts, g, batch)
        texts = [r["completion"].strip() for r in generated]
        for record, text in zip(records, texts):
            record["prediction"] = text
            record["correct"] = exact_match([text], [record["reference"]]) == 1.0
        self.notes.append(f"--generate: greedy responses of up to {g.max_new_tokens} new tokens scored against the "
                          "reference (exact match ignoring spacing, ROUGE-1/2/L F1, corpus BLEU; all 0-1)")
        rouge = rouge_scores(texts, self.references)
        return {"eval_exact_match": exact_match(texts, self.references), **{f"eval_{k}": v for k, v in rouge.items()},
                "eval_bleu": bleu(texts, self.references)["bleu"]}
