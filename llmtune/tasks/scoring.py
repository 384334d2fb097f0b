"""Scoring tokens in ``llmtune eval``: the LM and generation tasks' shared pieces (loss, perplexity, bits per character/byte).

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

from typing import Any, Sequence

from llmtune.modeling import IGNORE
from llmtune.tasks.base import MAP_BATCH_SIZE


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


def token_stream(texts: Sequence[str], tokenizer: Any) -> tuple[list[int], int, int]:
    """``[eos] doc1 [eos] doc2 [eos] ...`` (blank documents skipped), with its characters and UTF-8 bytes.

    Each document counts one character/byte more: its separator stands for the newline after it.
    """
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
