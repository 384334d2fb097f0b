"""Compressed model folders: torchao-quantized Hugging Face folders and ONNX exports.

Both kinds are plain folders with a ``config.json``, a tokenizer and a small record,
``compression.json`` (``RECORD_FILE``), that says how the folder was made: the method, the versions of
the libraries that made it and the measured size next to the source's. ``modeling.load_pretrained``
asks ``load_compressed`` first, so every consumer (``eval``, ``generate``, ``serve``) loads them:

* a torchao folder holds safetensors weights and ``quantization_config`` in its ``config.json``;
  transformers' ``TorchAoConfig`` integration rebuilds the quantized tensors on load (torchao must be
  installed: a missing extra is one line naming it);
* an ONNX folder holds ``model.onnx`` (no PyTorch weights); it loads as ``OrtModel``, an
  ``nn.Module`` that runs an ONNX Runtime session behind the usual ``forward`` (see ``onnx_model``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from llmtune.errors import ConfigError, ModelError

RECORD_FILE = "compression.json"
"""What made a compressed folder: ``{"format", "method", "versions", "bytes", "source_bytes", ...}``."""
ONNX_FILE = "model.onnx"
EXTRA = "pip install 'llmtune[compress]'"
AUX_FILES = ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.json", "vocab.txt",
             "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
"""Files besides the weights that travel into a compressed folder (tokenizer, generation settings)."""


def require(module: str, what: str) -> Any:
    """Import ``module`` or raise one line naming the extra that installs it.

    Raises:
        ConfigError: ``module`` is not installed.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{what} needs {module.split('.')[0]}, which is not installed; {EXTRA}") from None


def read_record(folder: Path) -> Optional[dict[str, Any]]:
    """The folder's ``compression.json``, or None when it has none."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def quantization_of(folder: Path) -> Optional[str]:
    """How ``folder``'s model is already compressed (``"torchao int8-dynamic"``, ``"onnx"``...), or None."""
    folder = Path(folder)
    record = read_record(folder) or {}
    if record:
        return " ".join(str(record[k]) for k in ("format", "method") if record.get(k))
    if (folder / ONNX_FILE).is_file():
        return "onnx"
    config = folder / "config.json"
    if config.is_file():
        quant = json.loads(config.read_text(encoding="utf-8")).get("quantization_config")
        if quant:
            return str(quant.get("quant_method", "quantized"))
    return None


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def weight_bytes(folder: Path) -> int:
    """Bytes of the weight files of ``folder`` (safetensors or ONNX, with ONNX external data)."""
    names = ("*.safetensors", "*.onnx", "*.onnx.data", "*.onnx_data")
    return sum(p.stat().st_size for pattern in names for p in Path(folder).glob(pattern) if p.is_file())


def library_versions(*names: str) -> dict[str, str]:
    """``{name: version}`` of the installed distributions among ``names``."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def load_compressed(path: str, cls: Any, kwargs: dict[str, Any]) -> Optional[Any]:
    """Load a compressed folder for ``modeling.load_pretrained``, or None when ``path`` is not one.

    Tokenizers and configs load the usual way (None); an ONNX folder loads as ``OrtModel``; a torchao
    folder is checked for torchao and then loads the usual way (None).

    Raises:
        ConfigError: The extra that reads the folder is not installed.
        ModelError: An ONNX folder asked for as a model its head cannot serve.
    """
    folder = Path(path)
    cls_name = getattr(cls, "__name__", str(cls))
    if not folder.is_dir() or "Tokenizer" in cls_name or "Config" in cls_name:
        return None
    kind = quantization_of(folder)
    if kind is None:
        return None
    if (folder / ONNX_FILE).is_file():
        from llmtune.compress.onnx_model import load_onnx_model

        return load_onnx_model(folder, cls_name, kwargs)
    if "torchao" not in kind:
        return None
    require("torchao", f"{path} (quantized with torchao)")
    return _load_torchao(folder, cls, kwargs)


def _load_torchao(folder: Path, cls: Any, kwargs: dict[str, Any]) -> Any:
    """``cls.from_pretrained`` of a torchao folder, ready for inference by the engine's Trainer.

    transformers' Trainer refuses "purely quantized" models because it cannot train them; llmtune's
    commands only run such folders for inference (eval's ``Trainer.predict``, generate, serve), so the
    model is marked as a plain one for that check. ``finetune`` refuses compressed folders itself.
    """
    try:
        loaded = cls.from_pretrained(str(folder), use_safetensors=True, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"could not load the torchao-quantized model {folder}: {first}") from exc
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    model.is_quantized = False
    return loaded


def refuse_compressed(path: str, action: str) -> None:
    """Refuse to ``action`` a folder that is already compressed.

    Raises:
        ModelError: ``path`` holds a quantized or ONNX model.
    """
    kind = quantization_of(Path(path))
    if kind:
        raise ModelError(f"{path} is already compressed ({kind}); {action} the full-precision run or model folder "
                         "it was made from")
