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

from pathlib import Path
from typing import Any

from llmtune.compress.base import (  # noqa: F401 - the package's public names
    AUX_FILES,
    EXTRA,
    ONNX_FILE,
    RECORD_FILE,
    folder_bytes,
    library_versions,
    quantization_of,
    read_record,
    refuse_compressed,
    require,
    weight_bytes,
)
from llmtune.errors import ModelError


def load_compressed(path: str, cls: Any, kwargs: dict[str, Any]) -> Any | None:
    """Load a compressed folder for ``modeling.load_pretrained``, or None when ``path`` is not one.

    Tokenizers and configs load the usual way (None); an ONNX folder loads as ``OrtModel``; a torchao
    folder loads with ``from_pretrained`` once torchao is known to be installed.

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
    from llmtune.compress.embedding import enable_row_lookup
    from llmtune.compress.methods import quiet_default_warning

    enable_row_lookup()  # int8 embeddings: dequantize the rows looked up, not the whole table
    try:
        with quiet_default_warning():
            loaded = cls.from_pretrained(str(folder), use_safetensors=True, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"could not load the torchao-quantized model {folder}: {first}") from exc
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    model.is_quantized = False
    return loaded


def refuse_generation(path: str) -> None:
    """Refuse to generate (or serve) from an ONNX folder exported without a key/value cache (an older export).

    Raises:
        ModelError: ``path`` holds ``model.onnx`` and its ``compression.json`` does not say ``kv_cache``.
    """
    if (Path(path) / ONNX_FILE).is_file() and not (read_record(Path(path)) or {}).get("kv_cache"):
        raise ModelError(f"{path} is an ONNX export without a key/value cache: it scores text (llmtune eval) but does "
                         "not generate; re-export its PyTorch model with this version (llmtune export MODEL --format "
                         "onnx -o OUT) to generate or serve it")

