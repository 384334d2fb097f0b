"""``llmtune export``: a run dir, model folder or LoRA adapter folder -> a plain Hugging Face model folder.

What is exported depends on what the source holds:

* a LoRA run (``RUN/adapter/adapter_config.json``, as ``llmtune finetune --lora`` saves it) or a bare
  adapter folder, with ``--merge``: the adapters are merged into their base model (loaded in fp32,
  merged, then stored in ``--dtype``, by default the base model's own dtype) and saved with
  ``save_pretrained`` as safetensors, with the run's tokenizer and generation settings. The result
  loads with ``AutoModelFor...from_pretrained`` where peft is not installed;
* any run dir or model folder without ``--merge``: its model files (config, safetensors weights,
  tokenizer, chat template, generation config) are copied; for a LoRA run these are the merged
  copy ``finetune`` saved at the top of the run dir. Checkpoints, logs and metrics stay behind.

Either way the exported folder is checked so the model stops talking (``guard_stops``): its tokenizer
carries the chat template the model was trained with (the run's saved tokenizer) and its
``generation_config.json`` names the tokenizer's eos; what is missing is added with one log line, a
different chat template is refused.

``--merge`` on a source without adapters is refused (there is nothing to merge), and so is a bare
adapter folder without ``--merge`` (an adapter alone is not a model).

``--format onnx`` (``export_onnx``) writes ``model.onnx`` instead of safetensors weights, for
classification, question-answering and causal-LM heads (``llmtune.compress.onnx_export``; a causal
LM's graph carries its key/value cache, so ``generate`` and ``serve`` run it), with ``--quantize int8``
for ONNX Runtime dynamic quantization, a parity check against the PyTorch model and
``compression.json``; it is written into a temporary folder renamed when complete.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from llmtune.adapters import ADAPTER_CONFIG, base_quantization, find_adapter, merge_into, quantizing_load
from llmtune.errors import ConfigError, ModelError

MODEL_FILE_PATTERNS = (
    "config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
    "chat_template.json", "vocab.json", "vocab.txt", "merges.txt", "*.model", "*.tiktoken", "*.py",
)
"""Files of a Hugging Face model folder (custom-code ``*.py`` included); everything else stays behind."""
_AUTO_CLASSES = {"CAUSAL_LM": "AutoModelForCausalLM", "SEQ_CLS": "AutoModelForSequenceClassification",
                 "QUESTION_ANS": "AutoModelForQuestionAnswering", "TOKEN_CLS": "AutoModelForTokenClassification"}
_LABEL_FIELDS = ("id2label", "label2id", "problem_type")
DTYPES = ("auto", "float32", "bfloat16", "float16")
FORMATS = ("hf", "onnx")
QUANTIZE = ("int8",)


@dataclass
class ExportResult:
    """What ``run`` wrote: the folder, how it was made and the model's size."""

    output_dir: Path
    merged: bool
    base_model: Optional[str]
    parameters: Optional[int]
    bytes_on_disk: int
    parity: tuple[str, ...] = ()
    format: str = "hf"


def run(source: str, output_dir: str, *, merge: bool = False, base_model: Optional[str] = None,
        dtype: str = "auto", overwrite: bool = False, format: str = "hf",
        quantize: Optional[str] = None) -> ExportResult:
    """Export ``source`` into ``output_dir`` (see the module docstring).

    Raises:
        ConfigError: A missing source, ``--merge`` without adapters, an adapter without ``--merge``,
            an output folder that is not empty (without ``overwrite``) or overlaps the source.
        ModelError: The base model or the adapters cannot be loaded.
    """
    src = Path(source).expanduser()
    if not src.is_dir():
        raise ConfigError(f"{source} is not a folder; pass a run dir, a model folder or a LoRA adapter folder")
    adapter = find_adapter(src)
    if merge and adapter is None:
        raise ConfigError(f"{source} holds no LoRA adapters (no {ADAPTER_CONFIG} in it or in adapter/): nothing to "
                          "merge; drop --merge to copy the full model")
    if not merge and adapter == src:
        raise ConfigError(f"{source} is a LoRA adapter folder, not a model; pass --merge to merge it into its base model")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if format not in FORMATS:
        raise ConfigError(f"--format {format}: choose one of {', '.join(FORMATS)}")
    if quantize is not None and format != "onnx":
        raise ConfigError("--quantize applies to --format onnx; for a quantized Hugging Face folder use "
                          "llmtune quantize RUN --method int8-dynamic -o OUT")
    if format == "onnx":
        if merge:
            raise ConfigError("--format onnx exports a full model: merge first (llmtune export RUN --merge -o MERGED), "
                              "then export MERGED with --format onnx")
        return export_onnx(src, Path(output_dir).expanduser(), quantize, overwrite)
    out = _prepare_output(src, Path(output_dir).expanduser(), overwrite)
    if merge:
        assert adapter is not None
        base, parameters = merge_adapter(adapter, out, base_model, dtype)
        guard_stops(out, _trained_tokenizer_folder(adapter))
    else:
        base, parameters = None, None
        folder = _model_folder(src)
        copy_model_files(folder, out)
        guard_stops(out, folder)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return ExportResult(out, merge, base, parameters, size)


def _prepare_output(src: Path, out: Path, overwrite: bool) -> Path:
    """Check the output folder (empty, not overlapping the source), clearing it with ``overwrite``."""
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents or o in s.parents:
        raise ConfigError(f"--output-dir {out} overlaps the source {src}; export into a separate folder")
    if o.exists() and (not o.is_dir() or any(o.iterdir())):
        if not overwrite:
            raise ConfigError(f"--output-dir {out} exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(o) if o.is_dir() else o.unlink()
    o.mkdir(parents=True, exist_ok=True)
    return o


def _model_folder(src: Path) -> Path:
    from llmtune.modeling import resolve_model_path

    return Path(resolve_model_path(str(src)))


def copy_model_files(folder: Path, out: Path) -> list[str]:
    """Copy the model files of ``folder`` (``MODEL_FILE_PATTERNS``) into ``out``.

    Raises:
        ModelError: ``folder`` has no safetensors weights.
    """
    files = sorted({p for pattern in MODEL_FILE_PATTERNS for p in folder.glob(pattern) if p.is_file()})
    if not any(p.suffix == ".safetensors" for p in files):
        raise ModelError(f"{folder} has no safetensors weights to export (pickled .bin weights are not copied); load "
                         "and re-save it with save_pretrained first")
    for path in files:
        shutil.copy2(path, out / path.name)
    return [p.name for p in files]


def merge_adapter(adapter: Path, out: Path, base_model: Optional[str], dtype: str) -> tuple[str, int]:
    """Merge the LoRA adapters in ``adapter`` into their base model and save the result in ``out``.

    Args:
        adapter: Folder with ``adapter_config.json`` and the adapter weights (and usually a tokenizer).
        out: Empty output folder.
        base_model: The base model (default: ``base_model_name_or_path`` of the adapter config).
        dtype: ``auto`` (the base model's dtype) or a torch dtype name.

    Returns:
        The base model used and the merged model's parameter count.
    """
    import torch

    from llmtune.modeling import load_pretrained, quiet_transformers

    settings = json.loads((adapter / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = base_model or settings.get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{adapter / ADAPTER_CONFIG} does not name its base model; pass --base-model")
    auto_class = _AUTO_CLASSES.get(str(settings.get("task_type")), "AutoModelForCausalLM")
    # A --quantize-base int8 run trained its adapters on the int8 base: merge into that base, dequantized.
    quantized = base_quantization(_run_quantize_base(adapter), cuda=torch.cuda.is_available())
    try:
        labels = _label_kwargs(adapter) if "Classification" in auto_class else {}
        with quiet_transformers(), quantizing_load(quantized):
            model = load_pretrained(base, auto_class, dtype=torch.float32, **labels, **quantized)
    except ModelError as exc:
        raise ModelError(f"the adapters' base model {base} cannot be loaded ({exc}); pass it with --base-model") from exc
    target = _target_dtype(model.config, dtype)
    merged = merge_into(model, adapter).to(target)
    with quiet_transformers():
        merged.save_pretrained(str(out))
    _save_tokenizer(adapter, base, out)
    run_dir = adapter.parent
    if (run_dir / "generation_config.json").is_file():  # the run's stop tokens, not only the base model's
        shutil.copy2(run_dir / "generation_config.json", out / "generation_config.json")
    return base, sum(p.numel() for p in merged.parameters())


def _run_quantize_base(adapter: Path) -> Optional[str]:
    """``lora.quantize_base`` of the run the adapter folder belongs to (its ``config.yaml``), or None."""
    import yaml

    config = adapter.parent / "config.yaml"
    if not config.is_file():
        return None
    data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    return ((data.get("lora") or {}) if isinstance(data, dict) else {}).get("quantize_base")


def _label_kwargs(adapter: Path) -> dict[str, Any]:
    """A classifier's label names from the run's merged config.json (its head size follows from them)."""
    config = adapter.parent / "config.json"
    if not config.is_file():
        return {}
    data = json.loads(config.read_text(encoding="utf-8"))
    return {key: data[key] for key in _LABEL_FIELDS if data.get(key) is not None}


def _target_dtype(config: Any, dtype: str) -> Any:
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored, None)
    return stored if isinstance(stored, torch.dtype) else torch.float32


def _trained_tokenizer_folder(adapter: Path) -> Optional[Path]:
    """Where the run saved the tokenizer it trained with: the adapter folder, else its run dir (None: neither)."""
    from llmtune.tokenizer import TOKENIZER_FILES

    for folder in (adapter, adapter.parent):
        if any((folder / name).is_file() for name in TOKENIZER_FILES):
            return folder
    return None


def _save_tokenizer(adapter: Path, base: str, out: Path) -> None:
    """The tokenizer the run saved (it may carry a chat template), else the base model's."""
    from llmtune.tokenizer import load_tokenizer

    own = _trained_tokenizer_folder(adapter)
    load_tokenizer(str(own) if own else base).save_pretrained(str(out))


def guard_stops(out: Path, trained: Optional[Path]) -> None:
    """Check the exported folder against the model that stops talking: trained chat template, eos in generation_config.

    Args:
        out: The exported model folder.
        trained: The folder holding the tokenizer the model was trained with (None: nothing to compare).

    Raises:
        ModelError: The exported tokenizer has a chat template other than the trained one.
    """
    from llmtune.decoding import check_chat_template, ensure_eos_stop, trained_chat_template
    from llmtune.tokenizer import TOKENIZER_FILES, load_tokenizer

    if not any((out / name).is_file() for name in TOKENIZER_FILES):
        return
    tokenizer = load_tokenizer(str(out))
    if trained is not None and check_chat_template(tokenizer, trained_chat_template(trained), str(trained), "export"):
        tokenizer.save_pretrained(str(out))
    if (out / "generation_config.json").is_file():
        from transformers import GenerationConfig

        config = GenerationConfig.from_pretrained(str(out))
        if ensure_eos_stop(config, tokenizer, "export"):
            config.save_pretrained(str(out))


def export_onnx(src: Path, out: Path, quantize: Optional[str], overwrite: bool) -> ExportResult:
    """``--format onnx``: the source's model as ``model.onnx`` + config + tokenizer + ``compression.json``.

    Raises:
        ConfigError: An unknown ``--quantize``, a head ONNX export does not support, the extra missing,
            an output folder that is not empty or overlaps the source.
        ModelError: An already compressed source, tracing failure or failed parity check.
    """
    from llmtune.compress import AUX_FILES, RECORD_FILE, folder_bytes, library_versions, refuse_compressed
    from llmtune.compress.onnx_export import export_onnx as export_graph_folder
    from llmtune.compress.onnx_model import KV_CACHE
    from llmtune.dist import log
    from llmtune.modeling import check_weights
    from llmtune.tokenizer import load_tokenizer

    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {quantize}: choose one of {', '.join(QUANTIZE)}")
    folder = _model_folder(src)
    refuse_compressed(str(folder), "export")
    check_weights(str(folder), str(src))
    architecture = _architecture(folder)
    _check_output(src, out, overwrite)
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tokenizer = load_tokenizer(str(folder))
        if tokenizer.pad_token is None:  # decoder-only tokenizers: the parity rows are padded with end-of-text
            tokenizer.pad_token = tokenizer.eos_token
        exported = export_graph_folder(str(folder), tmp, architecture, tokenizer, quantize)
        for name in AUX_FILES:
            if (folder / name).is_file():
                shutil.copy2(folder / name, tmp / name)
        lines = tuple(r.line() for r in exported.parity)
        size, source_size = (tmp / "model.onnx").stat().st_size, _weights_size(folder)
        record = {"format": "onnx", "method": f"{quantize}-dynamic" if quantize else "fp32", "source": str(src),
                  "architecture": architecture, "opset": 17, KV_CACHE: exported.kv_cache, "parity": lines,
                  "bytes": size, "source_bytes": source_size,
                  "ratio": round(size / source_size, 4) if source_size else None,
                  "versions": library_versions("torch", "transformers", "onnx", "onnxruntime")}
        record["folder_bytes"] = folder_bytes(tmp)
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for line in lines:
        log(line)
    return ExportResult(out, False, None, exported.parameters, size, lines, "onnx")


def _check_output(src: Path, out: Path, overwrite: bool) -> None:
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents or o in s.parents:
        raise ConfigError(f"--output-dir {out} overlaps the source {src}; export into a separate folder")
    if o.exists() and (not o.is_dir() or any(o.iterdir())) and not overwrite:
        raise ConfigError(f"--output-dir {out} exists and is not empty; pass --overwrite to replace it")


def _architecture(folder: Path) -> str:
    architectures = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    if not architectures:
        raise ModelError(f"{folder}/config.json names no architecture; re-save the model with save_pretrained")
    return str(architectures[0])


def _weights_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))
