"""The teacher's outputs cached per training row, so a distillation run pays one teacher pass a row.

Rows are keyed by their unpadded token ids (``row_keys``): a row seen again in a later epoch (the same
classification row, the same packed LM block, which the Trainer only reorders) is served from memory.
``RowCache`` keeps one logit vector a row (classification); ``TopKCache`` keeps the teacher's top-k
log-probabilities per token (fp16) and their ids (``TopK``): a vocabulary-wide row per token would not fit.
Nothing goes to disk. ``engine.distill`` uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TEACHER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "use_cache")


@dataclass(frozen=True)
class TopK:
    """The teacher's top-k log-probabilities (``[..., k]``, any float dtype) and their token ids (``[..., k]``).

    Indexing slices both alike (``topk[..., :-1, :]``), so a ``LogitView`` shifts it as it shifts logits.
    """

    logprobs: Any
    indices: Any

    def __getitem__(self, index: Any) -> "TopK":
        return TopK(self.logprobs[index], self.indices[index])

    @property
    def shape(self) -> Any:
        return self.logprobs.shape


def row_keys(inputs: dict[str, Any]) -> list[bytes]:
    """One key per row: its token ids (and token types) where the attention mask is 1."""
    ids, mask, types = inputs["input_ids"], inputs.get("attention_mask"), inputs.get("token_type_ids")
    ids = ids.cpu().numpy()
    keep = mask.cpu().numpy().astype(bool) if mask is not None else None
    types = types.cpu().numpy() if types is not None else None
    keys = []
    for i in range(ids.shape[0]):
        row = slice(None) if keep is None else keep[i]
        key = ids[i][row].tobytes()
        if types is not None:
            key += b"|" + types[i][row].tobytes()
        keys.append(key)
    return keys


class TeacherCache:
    """The teacher's outputs per row, keyed by the row's unpadded token ids (``row_keys``).

    ``outputs`` runs the teacher on the batch's rows it has not seen (a sub-batch), stores them (``_store``)
    and returns the batch's in row order (``_serve``); ``hits``/``misses`` count rows served / computed.
    """

    def __init__(self) -> None:
        self.rows: dict[bytes, Any] = {}
        self.hits = 0
        self.misses = 0

    def outputs(self, teacher: Any, inputs: dict[str, Any], device: Any) -> Any:
        import torch

        keys = row_keys(inputs)
        missing = [i for i, key in enumerate(keys) if key not in self.rows]
        if missing:
            index = torch.tensor(missing, device=inputs["input_ids"].device)
            sub = {k: (v.index_select(0, index) if torch.is_tensor(v) and v.dim() else v) for k, v in inputs.items()}
            with torch.no_grad():
                computed = self._reduce(teacher(**sub)["logits"])
            mask = sub.get("attention_mask")
            for row, i in enumerate(missing):
                if keys[i] not in self.rows:
                    keep = mask[row].bool() if mask is not None else slice(None)
                    self.rows[keys[i]] = self._store([part[row] for part in computed], keep)
        self.hits, self.misses = self.hits + len(keys) - len(missing), self.misses + len(missing)
        return self._serve(keys, inputs, device)

    def _reduce(self, logits: Any) -> tuple[Any, ...]:
        """What is kept of a sub-batch's logits ``[B, ...]``, as tensors with the batch first."""
        return (logits,)

    def _store(self, row: list[Any], keep: Any) -> Any:
        """One row's entry from its slices of ``_reduce``'s tensors (``keep``: its unpadded positions)."""
        raise NotImplementedError

    def _serve(self, keys: list[bytes], inputs: dict[str, Any], device: Any) -> Any:
        raise NotImplementedError


class RowCache(TeacherCache):
    """The teacher's logits per row (one vector a row: classification), in fp32 on the CPU."""

    def _store(self, row: list[Any], keep: Any) -> Any:
        return row[0].float().cpu()

    def _serve(self, keys: list[bytes], inputs: dict[str, Any], device: Any) -> Any:
        import torch

        return torch.stack([self.rows[key] for key in keys]).to(device)

    def logits(self, teacher: Any, inputs: dict[str, Any], device: Any) -> Any:
        """The batch's teacher logits ``[B, C]``."""
        return self.outputs(teacher, inputs, device)


class TopKCache(TeacherCache):
    """The teacher's top-``k`` log-probabilities per token of each row (fp16) and their ids, on the CPU.

    A row keeps its unpadded positions only (``[L, k]``); served batches put them back where the attention
    mask is 1 (padding gets log-probability 0 at token 0: it counts in no term). Bytes a position:
    ``k x (2 + 2)`` (ids as int16 below 32,768 tokens, else int32: ``k x 6``).
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def _reduce(self, logits: Any) -> tuple[Any, ...]:
        import torch

        values, ids = torch.log_softmax(logits.float(), dim=-1).topk(self.k, dim=-1)
        dtype = torch.int16 if logits.shape[-1] <= 2**15 else torch.int32
        return values.half().cpu(), ids.to(dtype).cpu()

    def _store(self, row: list[Any], keep: Any) -> Any:
        keep = keep.cpu() if hasattr(keep, "cpu") else keep
        return row[0][keep].clone(), row[1][keep].clone()

    def _serve(self, keys: list[bytes], inputs: dict[str, Any], device: Any) -> TopK:
        import torch

        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
        rows = [self.rows[key] for key in keys]
        if mask is None or bool(mask.all()):  # packed LM blocks: no padding, one stack
            values, indices = torch.stack([v for v, _ in rows]), torch.stack([i for _, i in rows])
        else:
            values = torch.zeros(*ids.shape, self.k, dtype=torch.float16)
            indices = torch.zeros(*ids.shape, self.k, dtype=rows[0][1].dtype)
            keep = mask.bool().cpu()
            for i, (v, x) in enumerate(rows):
                values[i, keep[i]], indices[i, keep[i]] = v, x
        return TopK(values.to(device), indices.to(device).long())

    def nbytes(self) -> int:
        """Memory the cached values and ids take."""
        return sum(v.numel() * v.element_size() + i.numel() * i.element_size() for v, i in self.rows.values())

    def fill(self, teacher: Any, batches: Any, device: Any) -> None:
        """Run the teacher over ``batches`` (collated training batches) once, storing every row's top-k."""
        import torch

        if next(teacher.parameters()).device != torch.device(device):
            teacher.to(device)
        for batch in batches:
            inputs = {k: v.to(device) for k, v in batch.items() if k in TEACHER_INPUTS and torch.is_tensor(v)}
            self.outputs(teacher, inputs, "cpu")
        self.misses, self.hits = len(self.rows), 0  # count the training steps' own look-ups from here
