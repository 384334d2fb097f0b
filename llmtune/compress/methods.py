"""torchao quantization methods: names -> torchao configs, and where each can run.

===================  ============================================  ==========================================
method               torchao config                                runs on
===================  ============================================  ==========================================
int8-dynamic         Int8DynamicActivationInt8WeightConfig         CPU and CUDA (int8 weights, activations
                                                                   quantized per token at run time)
int8-weight-only     Int8WeightOnlyConfig                          CPU and CUDA (int8 weights, fp activations)
int4-weight-only     Int4WeightOnlyConfig(group_size=128)          CUDA only: torchao 0.18's int4 kernels
                                                                   (mslk / tinygemm) have no CPU path
===================  ============================================  ==========================================

Weights are quantized per output channel (int8) or in groups of 128 (int4); embeddings and layers
too small for the kernels stay in full precision (transformers' ``TorchAoConfig`` defaults).
"""

from __future__ import annotations

import difflib
from typing import Any

from llmtune.compress.base import require
from llmtune.errors import ConfigError

METHODS = ("int8-dynamic", "int8-weight-only", "int4-weight-only")
CUDA_ONLY = {"int4-weight-only": "torchao's int4 weight-only kernels (mslk/tinygemm)"}
INT4_GROUP = 128


def check_method(method: str, cuda: bool) -> None:
    """Refuse an unknown method, or one this machine cannot run (naming both).

    Raises:
        ConfigError: Unknown method, or a CUDA-only method without CUDA.
    """
    if method not in METHODS:
        close = difflib.get_close_matches(method, METHODS, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown quantization method '{method}'; {hint}choose one of {', '.join(METHODS)}")
    if method in CUDA_ONLY and not cuda:
        raise ConfigError(f"--method {method} needs a CUDA GPU ({CUDA_ONLY[method]} have no CPU kernels in the "
                          "installed torchao) and this machine has only a CPU; use int8-dynamic or int8-weight-only")


def torchao_config(method: str) -> Any:
    """The torchao config object that ``quantize_`` / ``TorchAoConfig`` applies for ``method``."""
    quant = require("torchao.quantization", f"quantization method {method}")
    if method == "int8-dynamic":
        return quant.Int8DynamicActivationInt8WeightConfig()
    if method == "int8-weight-only":
        return quant.Int8WeightOnlyConfig()
    return quant.Int4WeightOnlyConfig(group_size=INT4_GROUP)


def hf_quantization_config(method: str) -> Any:
    """transformers' ``TorchAoConfig`` for ``method`` (what ``from_pretrained(quantization_config=...)`` takes)."""
    from transformers import TorchAoConfig

    return TorchAoConfig(quant_type=torchao_config(method))
