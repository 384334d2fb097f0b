"""``llmtune quantize``: a run dir or model folder -> a torchao-quantized Hugging Face model folder.

The model loads through transformers' torchao integration (``from_pretrained(quantization_config=
TorchAoConfig(...))``, which calls torchao's ``quantize_`` on every linear layer) and is saved with
``save_pretrained`` as safetensors: the folder's ``config.json`` carries the ``quantization_config``,
so ``from_pretrained`` (and therefore ``llmtune eval``/``generate``/``serve``) rebuilds the quantized
model with torchao installed. transformers 5 writes safetensors only, and torchao's int8 tensors
serialise into it, so no pickle path is needed. ``compression.json`` records the method, the library
versions, which modules were quantized and the measured size.

The int8 methods quantize the input embedding too (``methods`` says how and why). A causal LM whose
output head is tied to that embedding (llmtune's Llama presets) is untied first, into an fp32 copy
beside the output, because transformers 5.25 cannot keep a quantized tie: ``save_pretrained`` writes the
flattened torchao tensors of both names (tied tensors are de-duplicated by name pattern, which
``lm_head._weight_qdata`` does not match), and ``from_pretrained`` then compares the two with
``torch.equal``, which torchao's ``IntxUnpackedToInt8Tensor`` does not implement; its own
``untie_embedding_weights=True`` fails at the same comparison. Untied, the head is an int8 linear layer
(torchao's int8 matmul) instead of an embedding table dequantized at every decoding step, at the cost of
storing the vocabulary's int8 rows twice.

The folder is written into a hidden temporary folder next to ``--output-dir`` and renamed when
complete, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmtune.adapters import ADAPTER_CONFIG
from llmtune.compress import (
    AUX_FILES,
    RECORD_FILE,
    folder_bytes,
    library_versions,
    refuse_compressed,
    weight_bytes,
)
from llmtune.compress.methods import (
    check_method,
    hf_quantization_config,
    quantizes_embeddings,
)
from llmtune.dist import log
from llmtune.errors import ConfigError, ModelError


@dataclass
class QuantizeResult:
    """What ``run`` wrote."""

    output_dir: Path
    method: str
    quantized_layers: int
    embeddings: list[str]
    bytes_on_disk: int
    source_bytes: int

    @property
    def ratio(self) -> float:
        """Size of the quantized weights relative to the source's."""
        return self.bytes_on_disk / self.source_bytes if self.source_bytes else 0.0


def run(source: str, output_dir: str, *, method: str, overwrite: bool = False) -> QuantizeResult:
    """Quantize ``source`` with ``method`` into ``output_dir`` (see the module docstring).

    Raises:
        ConfigError: Missing source, a bare LoRA adapter folder, an unknown method or one this machine
            cannot run, a non-empty or overlapping output folder, torchao not installed.
        ModelError: An already compressed source, no weights, or a load failure.
    """
    import torch

    from llmtune.modeling import check_weights, resolve_model_path

    src = Path(source).expanduser()
    if not src.is_dir():
        raise ConfigError(f"{source} is not a folder; pass a run dir or a Hugging Face model folder")
    if (src / ADAPTER_CONFIG).is_file() and not (src / "config.json").is_file():
        raise ConfigError(f"{source} is a LoRA adapter folder, not a model; merge it first: llmtune export {source} "
                          "--merge -o MERGED, then llmtune quantize MERGED")
    model_path = resolve_model_path(str(src))
    refuse_compressed(model_path, "quantize")
    check_method(method, torch.cuda.is_available())
    check_weights(model_path, source)
    out = Path(output_dir).expanduser()
    check_output(src, out, overwrite)
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        layers, embeddings, untied = quantize_into(model_path, tmp, method)
        if layers == 0:
            raise ModelError(f"{source} ({model_class(model_path)}) has no torch.nn.Linear layers besides its output "
                             f"head that torchao's {method} can quantize (GPT-2 uses Conv1D); export it to ONNX "
                             f"instead: llmtune export {source} --format onnx --quantize int8 -o OUT")
        result = QuantizeResult(out, method, layers, embeddings, weight_bytes(tmp), weight_bytes(Path(model_path)))
        write_record(tmp, {"format": "torchao", "method": method, "source": str(source),
                           "quantized_layers": layers, "quantized_embeddings": embeddings,
                           "untied_embeddings": untied, "bytes": result.bytes_on_disk,
                           "source_bytes": result.source_bytes, "ratio": round(result.ratio, 4)})
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"quantized {layers} linear layers and {', '.join(embeddings) or 'no embeddings'} with {method}: "
        f"{result.bytes_on_disk / 2**20:.2f} MiB of weights, "
        f"{result.ratio:.2f}x the source's {result.source_bytes / 2**20:.2f} MiB")
    return result


def check_output(src: Path, out: Path, overwrite: bool) -> None:
    """Refuse an output folder that overlaps the source, or exists non-empty without ``overwrite``."""
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents or o in s.parents:
        raise ConfigError(f"--output-dir {out} overlaps the source {src}; write into a separate folder")
    if o.exists() and (not o.is_dir() or any(o.iterdir())) and not overwrite:
        raise ConfigError(f"--output-dir {out} exists and is not empty; pass --overwrite to replace it")


def model_class(model_path: str) -> str:
    """The transformers class named by the folder's ``config.json`` (its trained head)."""
    config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    if not architectures:
        raise ModelError(f"{model_path}/config.json names no architecture; re-save the model with save_pretrained")
    return str(architectures[0])


def quantize_into(model_path: str, out: Path, method: str) -> tuple[int, list[str], bool]:
    """Load ``model_path`` quantized with ``method``, save it and its tokenizer into ``out``.

    Returns:
        The number of linear layers whose weights torchao replaced, the quantized embeddings' module
        names, and whether a tied output head was untied first.
    """
    import tempfile

    import torch
    import transformers

    from llmtune.modeling import load_pretrained, quiet_transformers

    name = model_class(model_path)
    cls = getattr(transformers, name, None)
    if cls is None:
        raise ModelError(f"{model_path} is a {name}, which the installed transformers does not know")
    embedding, tied = embedding_layout(model_path, cls) if quantizes_embeddings(method) else (None, False)
    kwargs: dict[str, Any] = {"quantization_config": hf_quantization_config(method, embedding),
                              "dtype": torch.float32}
    if method == "int4-weight-only":  # torchao's int4 kernels take bf16 on the GPU
        kwargs.update(dtype=torch.bfloat16, device_map="cuda")
    with quiet_transformers(), tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.untied") as copy:
        source = untie_into(model_path, cls, Path(copy)) if tied else model_path
        model = load_pretrained(source, cls, **kwargs)
        model.save_pretrained(str(out))
    for name in AUX_FILES:
        if (Path(model_path) / name).is_file():
            shutil.copy2(Path(model_path) / name, out / name)
    return count_quantized(model), quantized_embeddings(model), tied


def embedding_layout(model_path: str, cls: Any) -> tuple[str | None, bool]:
    """The input embedding's module name (None without one) and whether the output head shares its weight.

    Read from the architecture built on the meta device (no weights are read).
    """
    import torch
    from transformers import AutoConfig

    with torch.device("meta"):
        model = cls._from_config(AutoConfig.from_pretrained(model_path))
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    name = next((n for n, m in model.named_modules() if embedding is not None and m is embedding), None)
    return name, name is not None and head is not None and head.weight is embedding.weight


def untie_into(model_path: str, cls: Any, folder: Path) -> str:
    """Save an fp32 copy of ``model_path`` whose output head owns a copy of the embedding (see the module docstring)."""
    import torch

    from llmtune.modeling import load_pretrained

    model = load_pretrained(model_path, cls, dtype=torch.float32)
    head = model.get_output_embeddings()
    head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    model.config.tie_word_embeddings = False
    model.config.get_text_config(decoder=True).tie_word_embeddings = False
    model.save_pretrained(str(folder))
    return str(folder)


def count_quantized(model: Any) -> int:
    """Linear layers, the output head aside, whose weight is a torchao tensor subclass (not a plain tensor)."""
    import torch

    head = model.get_output_embeddings()
    return sum(1 for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head
               and type(m.weight).__module__.startswith("torchao"))


def quantized_embeddings(model: Any) -> list[str]:
    """Module names of the input embeddings and output head whose weight is a torchao tensor subclass."""
    import torch

    head = model.get_output_embeddings()
    return [n for n, m in model.named_modules() if (isinstance(m, torch.nn.Embedding) or m is head)
            and type(m.weight).__module__.startswith("torchao")]


def write_record(folder: Path, facts: dict[str, Any]) -> None:
    """``compression.json`` with ``facts``, the library versions and the folder's total size."""
    versions = library_versions("torch", "transformers", "torchao", "onnx", "onnxruntime")
    record = {**facts, "versions": versions, "folder_bytes": folder_bytes(folder)}
    (folder / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
