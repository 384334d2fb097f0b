"""What compressed folders share: file names, the record, sizes, the extra's import check (no llmtune imports
above ``errors``, so every ``compress`` module can use it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def read_record(folder: Path) -> dict[str, Any] | None:
    """The folder's ``compression.json``, or None when it has none."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def quantization_of(folder: Path) -> str | None:
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


def refuse_compressed(path: str, action: str) -> None:
    """Refuse to ``action`` a folder that is already compressed.

    Raises:
        ModelError: ``path`` holds a quantized or ONNX model.
    """
    kind = quantization_of(Path(path))
    if kind:
        raise ModelError(f"{path} is already compressed ({kind}); {action} the full-precision run or model folder "
                         "it was made from")
