"""The batched decoder behind ``llmtune serve``: many sequences, one forward pass per step.

Rows (one per completion being generated) live side by side in one left-padded batch with one KV
cache. ``add`` runs the prompts of newly admitted rows through the model as a batch (prefill) and
joins their cache to the running batch, padding the shorter cache on the left; ``step`` feeds every
row its last token (decode); ``keep`` drops finished rows and the padding columns nobody needs any
more. Each row carries explicit position ids and an attention mask, so padding never changes what
a row sees: greedy output is what ``model.generate`` gives for the prompt alone.

Only the worker thread of ``scheduler.Scheduler`` calls into an engine (it is not thread-safe).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from llmtune.decoding import left_pad, stop_ids


@dataclass
class SamplingParams:
    """How one row picks its next token (OpenAI's request fields)."""

    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: Optional[int] = None

    @property
    def greedy(self) -> bool:
        """Plain argmax: temperature 0 and no penalties."""
        return self.temperature == 0 and not self.presence_penalty and not self.frequency_penalty


@dataclass
class Row:
    """One sequence being generated: its prompt, settings and the tokens produced so far."""

    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    generated: list[int] = field(default_factory=list)
    generator: Any = None  # a torch.Generator when sampling
    owner: Any = None  # the scheduler's handle for this row


class BatchEngine:
    """Owns the model, the running batch's KV cache and attention mask."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.rows: list[Row] = []
        self.eos_ids = stop_ids(model, tokenizer)
        self._cache: Any = None
        self._mask: Any = None
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._logits_to_keep = "logits_to_keep" in params
        self.can_join = True  # False once a cache layer is not a plain growing one (sliding windows ...)

    @property
    def size(self) -> int:
        """Rows in the running batch."""
        return len(self.rows)

    def add(self, rows: Sequence[Row]) -> list[int]:
        """Prefill ``rows`` as one batch, join them to the running batch; returns their first tokens."""
        import torch

        for row in rows:
            row.generator = _generator(row.params.seed) if not row.params.greedy else None
        input_ids, mask = left_pad([r.prompt_ids for r in rows], self.tokenizer.pad_token_id)
        device = self.model.device
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": 1} if self._logits_to_keep else {}
        with torch.inference_mode():
            out = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                             position_ids=positions.to(device), use_cache=True, **extra)
        cache = getattr(out, "cache", None) or out.past_key_values
        self._join(cache, mask.to(device), list(rows))
        return self._pick(out.logits[:, -1, :], list(rows))

    def step(self) -> list[int]:
        """One decode step for every row; returns each row's next token (row order)."""
        import torch

        device = self.model.device
        last = torch.tensor([[r.generated[-1]] for r in self.rows], dtype=torch.long, device=device)
        positions = torch.tensor([[len(r.prompt_ids) + len(r.generated) - 1] for r in self.rows],
                                 dtype=torch.long, device=device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((self.size, 1))], dim=1)
        with torch.inference_mode():
            out = self.model(input_ids=last, attention_mask=self._mask, position_ids=positions, use_cache=True,
                             **{self._cache_kwarg: self._cache})
        self._cache = getattr(out, "cache", None) or out.past_key_values
        return self._pick(out.logits[:, -1, :], self.rows)

    def keep(self, indices: Sequence[int]) -> None:
        """Keep only the rows at ``indices`` (in that order); trim padding columns no row uses."""
        import torch

        if len(indices) == self.size:
            return
        if not indices:
            self.reset()
            return
        index = torch.tensor(list(indices), dtype=torch.long, device=self._mask.device)
        self.rows = [self.rows[i] for i in indices]
        self._mask = self._mask[index]
        if not self.can_join:  # sliding-window layers keep their own window: select rows, trim nothing
            for layer in self._cache.layers:
                layer.batch_select_indices(index)
            return
        used = self._mask.sum(dim=0).nonzero()
        start = int(used.min()) if used.numel() else 0
        self._mask = self._mask[:, start:]
        for layer in self._cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.keys = layer.keys[index, :, start:, :]
                layer.values = layer.values[index, :, start:, :]

    def reset(self) -> None:
        """Drop every row (after a failure, or when the batch empties)."""
        self.rows, self._cache, self._mask = [], None, None

    def _join(self, cache: Any, mask: Any, rows: list[Row]) -> None:
        """Append a prefilled batch to the running one, left-padding whichever cache is shorter."""
        import torch

        if not all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers):
            self.can_join = False
        if self._cache is None:
            self._cache, self._mask, self.rows = cache, mask, rows
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(self._cache.layers, cache.layers):
            old.keys = torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)], dim=0)
            old.values = torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)], dim=0)
        self._mask = torch.cat([_pad_left(self._mask, width, dim=1), _pad_left(mask, width, dim=1)], dim=0)
        self.rows = self.rows + rows

    def _pick(self, logits: Any, rows: Sequence[Row]) -> list[int]:
        """Choose (and record) each row's next token from its logits."""
        logits = logits.float()
        greedy = logits.argmax(dim=-1).tolist()
        tokens = [greedy[i] if row.params.greedy else sample_token(logits[i], row) for i, row in enumerate(rows)]
        for row, token in zip(rows, tokens):
            row.generated.append(token)
        return tokens


def sample_token(logits: Any, row: Row) -> int:
    """One token for ``row`` from its ``(vocab,)`` logits: penalties, then temperature and top-p sampling.

    Presence/frequency penalties follow OpenAI: ``logit - presence * [count > 0] - frequency * count``
    over the tokens this row generated so far.
    """
    import torch

    p = row.params
    logits = logits.clone()
    if (p.presence_penalty or p.frequency_penalty) and row.generated:
        ids, counts = torch.tensor(row.generated, device=logits.device).unique(return_counts=True)
        logits[ids] -= p.presence_penalty + p.frequency_penalty * counts.to(logits.dtype)
    if p.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / p.temperature, dim=-1)
    if p.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= p.top_p  # the mass before a token already reaches p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs.cpu(), 1, generator=row.generator))


def _generator(seed: Optional[int]) -> Any:
    """A CPU generator for one row: seeded (reproducible whatever else is in the batch) or random."""
    import torch

    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def _pad_left(tensor: Any, width: int, dim: int = 2) -> Any:
    """``tensor`` with zeros prepended along ``dim`` up to ``width``."""
    import torch

    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
