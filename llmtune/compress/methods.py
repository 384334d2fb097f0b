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

Weights are quantized per output channel (int8) or in groups of 128 (int4). The int8 methods also
quantize the input embeddings, int8 weight-only per row (``IntxWeightOnlyConfig(int8, PerAxis(0))``, the
config torchao documents for ``nn.Embedding``): in a small model with a large vocabulary they are most of
the weights (MiniLM-L6: 30522 x 384 of 22.7M), so leaving them fp32 kept int8 folders at ~0.65x the fp32
size. The int4 method leaves embeddings and the output head in full precision (transformers' defaults).
torchao 0.18 dequantizes the whole int8 table on every embedding lookup (not just the rows looked up; ~15
ms for 8192 x 512 on one loaded CPU thread), once per batch in ``eval`` but once per decoding step in
``generate``; llmtune loads these folders with ``compress.embedding.enable_row_lookup``, which dequantizes
only the rows looked up (same values, bit for bit).

How the int8 config is spelled (transformers 5.25's torchao integration, checked in
``quantizers/quantizer_torchao.py`` and ``integrations/torchao.py``):

* ``include_input_output_embeddings=True`` alone does nothing: it lets embeddings through the filter, but
  ``quantize_`` is then called with its default ``filter_fn`` (linear layers only), so they stay fp32.
* A torchao ``FqnToConfig`` names the embedding and gives the linear config as ``"_default"``; its
  ``"_default"`` also matches every *bias* of a linear layer, which transformers then quantizes too (and
  the forward fails in ``Int8Tensor``'s ``y += bias``), so biases are mapped to ``None`` (kept).
* torchao 0.18 warns that ``"_default"`` is deprecated (pytorch/ao#3229), but it is the only key
  transformers 5.25 reads as "every other linear layer", so the warning is silenced where the config is
  built or read back (``quiet_default_warning``).
* ``modules_to_not_convert=[]`` replaces transformers' default skip list (tied weights, the output
  head), which would keep a tied embedding in fp32.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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


def quantizes_embeddings(method: str) -> bool:
    """Whether ``method`` quantizes the input embeddings too (the int8 methods)."""
    return method.startswith("int8")


def embedding_config() -> Any:
    """torchao's int8 weight-only, per-row config for an ``nn.Embedding`` (one scale per token row)."""
    import torch

    quant = require("torchao.quantization", "embedding quantization")
    return quant.IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=quant.PerAxis(0))


def hf_quantization_config(method: str, embedding: str | None = None) -> Any:
    """transformers' ``TorchAoConfig`` for ``method`` (what ``from_pretrained(quantization_config=...)`` takes).

    Args:
        method: One of ``METHODS``.
        embedding: Module name of the input embedding to quantize int8 per row (int8 methods only; see
            the module docstring for why the config is spelled this way), or None to leave it fp32.
    """
    from transformers import TorchAoConfig

    if embedding is None or not quantizes_embeddings(method):
        return TorchAoConfig(quant_type=torchao_config(method))
    quant = require("torchao.quantization", f"quantization method {method}")
    with quiet_default_warning():
        per_module = quant.FqnToConfig({r"re:.*\.bias": None, embedding: embedding_config(),
                                        "_default": torchao_config(method)})
    return TorchAoConfig(quant_type=per_module, modules_to_not_convert=[])


@contextmanager
def quiet_default_warning() -> Iterator[None]:
    """Silence torchao's deprecation warning for ``FqnToConfig``'s ``"_default"`` key (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Config Deprecation: _default is deprecated")
        yield
