"""Looking up rows of an int8 embedding without dequantizing the whole table.

torchao 0.18 implements ``embedding`` on its ``IntxUnpackedToInt8Tensor`` (the tensor the int8 methods
put in ``nn.Embedding``, per-row int8) by dequantizing the whole table and then indexing it: 30522 x 384
floats (~45 MB) per lookup for MiniLM, once per batch in ``eval`` and once per new token in ``generate``,
which made the int8 folders several times slower than fp32. ``enable_row_lookup`` replaces that entry of
torchao's dispatch table with one that gathers the looked-up rows of the int8 data, scales and zero
points first and dequantizes only those, with torchao's own ``dequantize_affine`` (so the values are the
same as the whole-table path's, bit for bit). Tables quantized in blocks wider than one row keep
torchao's implementation.
"""

from __future__ import annotations

from typing import Any

_ENABLED: list[bool] = []


def enable_row_lookup() -> None:
    """Make int8 embedding lookups gather rows before dequantizing (idempotent; process-wide)."""
    if _ENABLED:
        return
    import torch
    from torchao.quantization import IntxUnpackedToInt8Tensor

    cls = IntxUnpackedToInt8Tensor
    whole_table = cls._TORCH_FN_TABLE[cls][torch.nn.functional.embedding]

    @cls.implements_torch_function(torch.nn.functional.embedding)
    def _rows(func: Any, types: Any, args: tuple, kwargs: dict) -> Any:
        indices, weight = args[0], args[1]
        if not isinstance(weight, cls) or weight.block_size[0] != 1 or indices.is_floating_point():
            return whole_table(func, types, args, kwargs)
        return gather_rows(weight, indices)

    _ENABLED.append(True)


def gather_rows(weight: Any, indices: Any) -> Any:
    """``weight.dequantize()[indices]`` computed on the gathered rows only (``weight``: per-row int8).

    The arithmetic is torchao's ``dequantize_affine`` for one scale and zero point per row:
    ``(q - zero_point) * scale`` in the output dtype.
    """
    flat = indices.reshape(-1)
    dtype = weight.dtype
    rows = weight.qdata.index_select(0, flat).to(dtype)
    rows = (rows - weight.zero_point.index_select(0, flat).to(dtype)) * weight.scale.index_select(0, flat)
    return rows.to(dtype).reshape(*indices.shape, rows.shape[-1])
