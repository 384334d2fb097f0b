"""ONNX export of classification, question-answering and causal-LM heads, with a parity check.

optimum's exporter (``optimum-onnx``) requires transformers < 4.58 and cannot be installed beside
transformers 5, so the graph is exported with ``torch.onnx.export`` (TorchScript exporter, opset 17,
dynamic batch and sequence axes) and run with ONNX Runtime. Causal LMs are exported without a
key/value cache (logits of the whole sequence): they score text, they do not generate.

``--quantize int8`` applies ONNX Runtime's dynamic quantization (int8 weights, activations quantized at
run time per tensor; the MatMul/Gemm kernels use the CPU's VNNI/AVX2 paths) to the exported graph.

Parity: the exported graph's outputs on a few rows (one of them padded) are compared with the
PyTorch model's; the largest absolute difference must stay within ``tolerance(...)`` or the export
fails with one line. The tolerance is relative to the largest PyTorch logit: 1e-4 for fp32 (float
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
from llmtune.compress.onnx_model import HEADS, head_of
from llmtune.errors import ConfigError, ModelError

PARITY_TEXTS = ("The film was a delight from start to finish.", "Rain is expected over the hills tomorrow.",
                "Whisk the eggs, then fold in the flour.", "Who won the match last night?")
TRACE_TEXTS = ("A short one.", "A somewhat longer sentence to trace with padding.")
"""The graph is traced on ``TRACE_TEXTS`` and checked on ``PARITY_TEXTS`` (other batch size and lengths), so a
shape the tracer froze into a constant fails the check instead of passing it."""
RELATIVE_TOLERANCE = {"fp32": 1e-4, "int8": 0.3}
OPSET = 17


@dataclass
class Parity:
    """The parity check's outcome: largest absolute difference and the tolerance it was held to."""

    max_abs_diff: float
    tolerance: float
    rows: int

    def line(self, what: str) -> str:
        """One line for the log and the summary."""
        return (f"parity ({what}): max |ONNX - PyTorch| = {self.max_abs_diff:.2e} over {self.rows} rows "
                f"(tolerance {self.tolerance:.2e})")


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


def export_graph(model: Any, head: str, inputs: dict[str, Any], path: Path) -> None:
    """Write ``model``'s graph to ``path`` with dynamic batch and sequence axes.

    Raises:
        ModelError: The exporter cannot trace the model (one line with its reason).
    """
    import torch

    names = list(inputs)
    outputs = list(next(outs for h, outs in HEADS.values() if h == head))
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes.update({n: ({0: "batch", 1: "sequence"} if head != "classification" else {0: "batch"}) for n in outputs})
    wrapper = _Positional(model, names, outputs)
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

    from llmtune.compress.onnx_model import OrtModel

    head = head_of(type(model).__name__) or "classification"
    ort_model = OrtModel(folder, model.config, head)
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
    result = Parity(max(diffs), RELATIVE_TOLERANCE[precision] * scale, int(mask.shape[0]))
    if not result.max_abs_diff <= result.tolerance:
        raise ModelError(f"ONNX parity check failed: {result.line(precision)}; the exported graph does not "
                         "reproduce the model (report it with the model's architecture)")
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


def export_onnx(model_path: str, out: Path, architecture: str, tokenizer: Any,
                quantize: str | None) -> tuple[list[Parity], int]:
    """Export ``model_path`` to ``out/model.onnx`` (int8 with ``quantize``), checking parity at each step.

    Returns:
        The parity results (fp32, then int8) and the model's parameter count.
    """
    require("onnx", "--format onnx")
    require("onnxruntime", "--format onnx")
    head = check_exportable(architecture, model_path)
    model = load_fp32(model_path, architecture)
    inputs = sample_inputs(tokenizer, head)
    fp32_dir = out / "fp32" if quantize else out
    fp32_dir.mkdir(exist_ok=True)
    export_graph(model, head, sample_inputs(tokenizer, head, TRACE_TEXTS), fp32_dir / ONNX_FILE)
    results = [parity(model, fp32_dir, inputs, "fp32")]
    if quantize:
        if quantize != "int8":
            raise ConfigError(f"--quantize {quantize}: ONNX export quantizes to int8 only")
        quantize_int8(fp32_dir / ONNX_FILE, out / ONNX_FILE)
        for extra in fp32_dir.iterdir():
            extra.unlink()
        fp32_dir.rmdir()
        results.append(parity(model, out, inputs, "int8"))
    model.config.save_pretrained(str(out))
    return results, sum(p.numel() for p in model.parameters())
