"""ONNX export of classification, question-answering and causal-LM heads, with a parity check.

optimum's exporter (``optimum-onnx``) requires transformers < 4.58 and cannot be installed beside
transformers 5, so the graph is exported with ``torch.onnx.export`` (TorchScript exporter, opset 17,
dynamic batch and sequence axes) and run with ONNX Runtime. Causal LMs are exported as one graph with
their key/value cache (``export_cached_graph``): inputs ``input_ids``, ``attention_mask`` (past + new
positions), ``position_ids`` and ``past_key_values.{i}.key|value`` per layer, outputs ``logits`` and
``present.{i}.key|value``, with dynamic batch, sequence and past axes. A zero-length past is a prefill,
so the same graph scores whole texts (``llmtune eval``) and decodes one token at a time (``generate``,
``serve``). It is traced with a non-empty past; ONNX Runtime runs it with an empty one.

``--quantize int8`` applies ONNX Runtime's dynamic quantization (int8 weights, activations quantized at
run time per tensor; the MatMul/Gemm kernels use the CPU's VNNI/AVX2 paths) to the exported graph.

Parity: the exported graph's outputs on a few rows (one of them padded) are compared with the
PyTorch model's; the largest absolute difference must stay within ``tolerance(...)`` or the export
fails with one line. A causal LM is also decoded ``DECODE_STEPS`` greedy steps through the cache, by
ONNX Runtime and by PyTorch side by side on PyTorch's tokens (left-padded rows, positions from the
mask, as ``serve`` decodes): every step's logits within the tolerance and, for fp32, the same greedy
token at every step. The tolerance is relative to the largest PyTorch logit: 1e-4 for fp32 (float
reassociation only) and 0.3 for int8, whose activations are quantized per tensor at run time: on
all-MiniLM-L6-v2 fine-tuned on SUBJ the int8 graph's logits moved by up to 22 % of the largest logit on 64
test rows (98 % same predictions), while a broken graph misses by about the logits themselves.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmtune.compress.base import ONNX_FILE, require
from llmtune.compress.onnx_model import HEADS, PAST, PRESENT, head_of
from llmtune.errors import ConfigError, ModelError

PARITY_TEXTS = ("The film was a delight from start to finish.", "Rain is expected over the hills tomorrow.",
                "Whisk the eggs, then fold in the flour.", "Who won the match last night?")
TRACE_TEXTS = ("A short one.", "A somewhat longer sentence to trace with padding.")
"""The graph is traced on ``TRACE_TEXTS`` and checked on ``PARITY_TEXTS`` (other batch size and lengths), so a
shape the tracer froze into a constant fails the check instead of passing it."""
RELATIVE_TOLERANCE = {"fp32": 1e-4, "int8": 0.3}
OPSET = 17
DECODE_STEPS = 8
TRACE_PAST = 3
"""Cached positions the causal-LM graph is traced with (any non-zero length other than the traced sequence's)."""


@dataclass
class Parity:
    """The parity check's outcome: largest absolute difference and the tolerance it was held to."""

    max_abs_diff: float
    tolerance: float
    rows: int
    what: str = "fp32"

    def line(self) -> str:
        """One line for the log and the summary."""
        return (f"parity ({self.what}): max |ONNX - PyTorch| = {self.max_abs_diff:.2e} over {self.rows} rows "
                f"(tolerance {self.tolerance:.2e})")

    def check(self) -> Parity:
        """``self``, or ModelError when the difference exceeds the tolerance."""
        if not self.max_abs_diff <= self.tolerance:
            raise ModelError(f"ONNX parity check failed: {self.line()}; the exported graph does not reproduce the "
                             "model (report it with the model's architecture)")
        return self


def check_exportable(architecture: str, name: str) -> str:
    """The head of ``architecture`` (``classification``, ``qa``, ``causal_lm``).

    Raises:
        ConfigError: A head llmtune does not export to ONNX.
    """
    head = head_of(architecture)
    if head is None:
        suffixes = ", ".join(s.removeprefix("For") for s in HEADS)
        raise ConfigError(f"{name} is a {architecture}: ONNX export supports {suffixes} heads only; fine-tune "
                          "one of those, or export it as a Hugging Face folder (drop --format onnx)")
    return head


def sample_inputs(tokenizer: Any, head: str, texts: tuple[str, ...] = PARITY_TEXTS) -> dict[str, Any]:
    """Tokenized ``texts`` (padded, so the graph keeps the attention-mask path), pairs for QA."""
    if head == "qa":
        batch = tokenizer(list(texts[::2]) * 2, list(texts[1::2]) * 2, padding=True, return_tensors="pt")
    else:
        batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


@dataclass
class Exported:
    """What ``export_onnx`` wrote: parity results (fp32 first), parameter count, whether the graph has a cache."""

    parity: list[Parity]
    parameters: int
    kv_cache: bool


def export_graph(model: Any, head: str, inputs: dict[str, Any], path: Path) -> None:
    """Write ``model``'s graph to ``path`` with dynamic batch and sequence axes (and past, for a causal LM).

    Raises:
        ModelError: The exporter cannot trace the model (one line with its reason).
    """
    if head == "causal_lm":
        export_cached_graph(model, inputs, path)
        return
    names = list(inputs)
    outputs = list(next(outs for h, outs in HEADS.values() if h == head))
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes.update({n: ({0: "batch", 1: "sequence"} if head != "classification" else {0: "batch"}) for n in outputs})
    _trace(model, _Positional(model, names, outputs), inputs, axes, outputs, path)


def _trace(model: Any, wrapper: Any, inputs: dict[str, Any], axes: dict[str, Any], outputs: list[str],
           path: Path) -> None:
    """``torch.onnx.export`` of ``wrapper`` (called with ``inputs``' values in order), errors as one line."""
    import torch

    names = list(inputs)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings: the parity check on other shapes is the real test
            torch.onnx.export(wrapper, tuple(inputs[n] for n in names), str(path), input_names=names,
                              output_names=outputs, dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"ONNX export of {type(model).__name__} failed: {first[:300]}") from exc
    finally:
        model.eval()  # the TorchScript exporter leaves the module in training mode


def _Positional(model: Any, names: list[str], outputs: list[str]) -> Any:
    """A module taking ``names`` positionally and returning ``outputs`` as a tuple (what the exporter traces)."""
    import torch

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            out = self.model(**dict(zip(names, tensors)))
            return tuple(out[n] for n in outputs)

    return Positional()


def export_cached_graph(model: Any, inputs: dict[str, Any], path: Path) -> None:
    """Write a causal LM's graph with its key/value cache to ``path`` (see the module docstring).

    It is traced on ``inputs`` after a ``TRACE_PAST``-position past taken from the model's own cache of
    them (real values, a length unlike the sequence's), with positions following the mask.

    Raises:
        ConfigError: The model's cache is not a plain growing one (sliding-window or other layer kinds).
        ModelError: The exporter cannot trace the model.
    """
    import torch

    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        cache = _cache_of(model(**_cache_kwargs(model, None), input_ids=ids, attention_mask=mask, use_cache=True))
    kinds = {type(layer).__name__ for layer in cache.layers}
    if kinds != {"DynamicLayer"}:
        raise ConfigError(f"{type(model).__name__} keeps a {', '.join(sorted(kinds))} cache: ONNX export with a "
                          "key/value cache supports full-attention causal LMs (Llama, GPT-2 and the like)")
    past = [t[:, :, :TRACE_PAST].contiguous() for layer in cache.layers for t in (layer.keys, layer.values)]
    full_mask = torch.cat([mask.new_ones((mask.shape[0], TRACE_PAST)), mask], dim=1)
    trace = {"input_ids": ids, "attention_mask": full_mask,
             "position_ids": (full_mask.cumsum(-1) - 1).clamp(min=0)[:, TRACE_PAST:]}
    layers = len(cache.layers)
    trace.update({PAST.format(i // 2, "key" if i % 2 == 0 else "value"): t for i, t in enumerate(past)})
    outputs = ["logits"] + [PRESENT.format(i, kv) for i in range(layers) for kv in ("key", "value")]
    axes: dict[str, Any] = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"},
                            "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    axes.update({n: {0: "batch", 2: "past"} for n in list(trace)[3:]})
    axes.update({n: {0: "batch", 2: "total"} for n in outputs[1:]})
    _trace(model, _Cached(model, layers), trace, axes, outputs, path)


def _cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``{"cache": cache}``, or ``past_key_values`` for a model whose forward still takes that name."""
    import inspect

    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return {name: cache}


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _Cached(model: Any, layers: int) -> Any:
    """A module taking ``input_ids, attention_mask, position_ids, *past`` flat and returning logits + presents flat.

    transformers 5 models take a ``Cache`` object: the flat past tensors become a ``DynamicCache`` (one
    plain layer per pair), and the grown cache comes back as flat tensors, which the exporter can trace.
    """
    import torch
    from transformers import DynamicCache

    class Cached(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> Any:
            cache = DynamicCache([(past[2 * i], past[2 * i + 1]) for i in range(layers)])
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=True, **_cache_kwargs(self.model, cache))
            grown = _cache_of(out)
            return (out.logits, *[t for layer in grown.layers for t in (layer.keys, layer.values)])

    return Cached()


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime dynamic quantization (int8 weights) of ``source`` into ``target``."""
    quantization = require("onnxruntime.quantization", "--quantize int8")
    quantization.quantize_dynamic(str(source), str(target), weight_type=quantization.QuantType.QInt8)


def parity(model: Any, folder: Path, inputs: dict[str, Any], precision: str) -> Parity:
    """Compare the ONNX graph in ``folder`` with ``model`` on ``inputs``; padded positions are ignored.

    Raises:
        ModelError: The difference exceeds the tolerance for ``precision``.
    """
    import torch

    head = head_of(type(model).__name__) or "classification"
    ort_model = _ort_model(folder, model.config, head)
    with torch.no_grad():
        ours, theirs = ort_model(**inputs), model(**inputs)
    names = [n for n in ("logits", "start_logits", "end_logits") if getattr(ours, n, None) is not None]
    mask = inputs["attention_mask"].bool()
    diffs, scale = [], 1.0
    for n in names:
        a, b = ours[n], theirs[n].float()
        if head != "classification":  # per-token outputs: compare real tokens only
            a, b = a[mask], b[mask]
        diffs.append((a - b).abs().max().item())
        scale = max(scale, b.abs().max().item())
    return Parity(max(diffs), RELATIVE_TOLERANCE[precision] * scale, int(mask.shape[0]), precision).check()


def _ort_model(folder: Path, config: Any, head: str) -> Any:
    from llmtune.compress.onnx_model import OrtCausalLM, OrtModel

    return OrtCausalLM(folder, config) if head == "causal_lm" else OrtModel(folder, config, head)


def decode_parity(model: Any, folder: Path, tokenizer: Any, precision: str) -> Parity:
    """Decode ``DECODE_STEPS`` greedy steps through the cache with the graph and with ``model`` (module docstring).

    Both are fed PyTorch's greedy tokens (left-padded ``PARITY_TEXTS``, positions from the mask), so every
    step compares the same inputs: its last-position logits must agree within the tolerance and, for fp32,
    the graph's greedy token must be PyTorch's.

    Raises:
        ModelError: Logits beyond the tolerance, or (fp32) another greedy token at some step.
    """
    import torch

    ort_model = _ort_model(folder, model.config, "causal_lm")
    batch = tokenizer(list(PARITY_TEXTS), padding=True, padding_side="left", return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    caches: list[Any] = [None, None]
    diff, scale, differs_at = 0.0, 1.0, None
    for step in range(DECODE_STEPS):
        with torch.no_grad():
            outs = [m(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                      **_cache_kwargs(m, c)) for m, c in ((ort_model, caches[0]), (model, caches[1]))]
        caches = [_cache_of(o) for o in outs]
        ours, theirs = (o.logits[:, -1].float() for o in outs)
        diff, scale = max(diff, (ours - theirs).abs().max().item()), max(scale, theirs.abs().max().item())
        token = theirs.argmax(-1, keepdim=True)
        if differs_at is None and not bool((ours.argmax(-1, keepdim=True) == token).all()):
            differs_at = step + 1
        ids, positions = token, positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    what = f"{precision}, {DECODE_STEPS} cached greedy decode steps"
    result = Parity(diff, RELATIVE_TOLERANCE[precision] * scale, int(mask.shape[0]), what).check()
    if precision == "fp32" and differs_at is not None:
        raise ModelError(f"ONNX parity check failed: the cached graph's greedy token differs from PyTorch's at decode "
                         f"step {differs_at} of {DECODE_STEPS} ({result.line()})")
    return result


def load_fp32(model_path: str, architecture: str) -> Any:
    """The model in fp32 on the CPU, eval mode, with the cache off (what the graph is traced from)."""
    import torch
    import transformers

    from llmtune.modeling import load_pretrained, quiet_transformers

    cls = getattr(transformers, architecture, None)
    if cls is None:
        raise ModelError(f"{model_path} is a {architecture}, which the installed transformers does not know")
    with quiet_transformers():
        model = load_pretrained(model_path, cls, dtype=torch.float32)
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False
    return model.eval()


def export_onnx(model_path: str, out: Path, architecture: str, tokenizer: Any, quantize: str | None) -> Exported:
    """Export ``model_path`` to ``out/model.onnx`` (int8 with ``quantize``), checking parity at each step."""
    require("onnx", "--format onnx")
    require("onnxruntime", "--format onnx")
    head = check_exportable(architecture, model_path)
    model = load_fp32(model_path, architecture)
    inputs = sample_inputs(tokenizer, head)
    fp32_dir = out / "fp32" if quantize else out
    fp32_dir.mkdir(exist_ok=True)
    export_graph(model, head, sample_inputs(tokenizer, head, TRACE_TEXTS), fp32_dir / ONNX_FILE)
    results = _checks(model, fp32_dir, inputs, tokenizer, head, "fp32")
    if quantize:
        if quantize != "int8":
            raise ConfigError(f"--quantize {quantize}: ONNX export quantizes to int8 only")
        quantize_int8(fp32_dir / ONNX_FILE, out / ONNX_FILE)
        for extra in fp32_dir.iterdir():
            extra.unlink()
        fp32_dir.rmdir()
        results += _checks(model, out, inputs, tokenizer, head, "int8")
    if head == "causal_lm":  # the graph has its cache: generate (and OrtCausalLM) use it by default
        model.config.use_cache = True
    model.config.save_pretrained(str(out))
    return Exported(results, sum(p.numel() for p in model.parameters()), head == "causal_lm")


def _checks(model: Any, folder: Path, inputs: dict[str, Any], tokenizer: Any, head: str,
            precision: str) -> list[Parity]:
    """The parity checks of ``folder``'s graph: whole rows, plus cached decoding for a causal LM."""
    results = [parity(model, folder, inputs, precision)]
    if head == "causal_lm":
        results.append(decode_parity(model, folder, tokenizer, precision))
    return results
