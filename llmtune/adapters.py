"""Which weights train, and LoRA adapters: freeze layers, apply adapters, find them in a run dir, merge them.

One place for the peft glue every command needs: ``finetune`` freezes embeddings or lower layers
(``freeze_input_embeddings``, ``freeze_lower_layers``) or wraps a model (``apply_lora``),
``export --merge``, ``generate`` and ``eval`` find an adapter folder (``find_adapter``,
``split_adapter``) and fold it into its base model (``merge_into``).
"""

from __future__ import annotations

import functools
import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from llmtune.config.schema import RunConfig
from llmtune.dist import log
from llmtune.errors import ConfigError, ModelError
from llmtune.modeling import count_parameters, format_params

ADAPTER_CONFIG = "adapter_config.json"


_HEAD_NAMES = ("classifier", "score", "pre_classifier", "qa_outputs")


def lora_targets(model: Any, exclude: list[str]) -> list[str]:
    """Full names of every linear layer outside the task head and the newly initialised modules.

    Adapting every linear layer ("all-linear", as QLoRA does) works across architectures without a
    per-model name table: BERT's query/key/value/dense, GPT-2's c_attn/c_proj/c_fc, Llama's q_proj...
    """
    import torch
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    def excluded(name: str) -> bool:
        return any(name == e or name.startswith(e + ".") for e in exclude)

    return [name for name, module in model.named_modules()
            if isinstance(module, (torch.nn.Linear, Conv1D)) and not excluded(name)]


_PEFT_TASK_TYPES = {"AutoModelForSequenceClassification": "SEQ_CLS", "AutoModelForQuestionAnswering": "QUESTION_ANS",
                    "AutoModelForCausalLM": "CAUSAL_LM"}


def apply_lora(cfg: RunConfig, model: Any, new_modules: list[str], auto_class: str) -> Any:
    """Wrap ``model`` in LoRA adapters; the head and newly initialised modules train in full."""
    from peft import LoraConfig, TaskType, get_peft_model


    heads = [name for name, _ in model.named_children() if name in _HEAD_NAMES]
    full = sorted(set(heads) | set(new_modules))
    output = model.get_output_embeddings()  # an LM head (often tied to the input embeddings) is not adapted
    head = [n for n, m in model.named_modules() if output is not None and m is output]
    targets = cfg.lora.target_modules or lora_targets(model, [*full, *head])
    if not targets:
        raise ModelError("no linear layers found for LoRA; name them with --set lora.target_modules=[...]")
    # GPT-2's Conv1D stores its weight transposed; peft must be told (it warns and guesses otherwise).
    transposed = any(type(m).__name__ == "Conv1D" for n, m in model.named_modules() if n in set(targets))
    config = LoraConfig(task_type=TaskType[_PEFT_TASK_TYPES[auto_class]], r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                        lora_dropout=cfg.lora.dropout, target_modules=targets, modules_to_save=list(full),
                        fan_in_fan_out=transposed)
    prepare_quantized_base(model)
    if cfg.train.gradient_checkpointing:
        model.enable_input_require_grads()  # else frozen embeddings leave checkpointed blocks without gradient
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft calls a transformers API deprecated for v6
        try:
            model = get_peft_model(model, config)
        except ValueError as exc:
            if "not found in the base model" not in str(exc):
                raise
            leaves = sorted({n.rsplit(".", 1)[-1] for n in lora_targets(model, [*full, *head])})
            raise ModelError(f"lora.target_modules {cfg.lora.target_modules} match no layer of "
                             f"{type(model).__name__}; its linear layers are: {', '.join(leaves)}") from None
    total, trainable = count_parameters(model)
    in_full = f" ({', '.join(full)} in full)" if full else ""
    log(f"LoRA r={cfg.lora.r} on {len(targets)} layers; training {format_params(trainable)} of "
        f"{format_params(total)} parameters{in_full}")
    return model


def find_adapter(path: Path) -> Optional[Path]:
    """The LoRA adapter folder of ``path`` (itself, or its ``adapter/``), or None."""
    for folder in (path, path / "adapter"):
        if (folder / ADAPTER_CONFIG).is_file():
            return folder
    return None


def split_adapter(name: str) -> tuple[str, Optional[Path]]:
    """``(base model, adapter folder)`` for a bare peft adapter folder, else ``(name, None)``.

    A bare adapter folder holds ``adapter_config.json`` but no ``config.json``; its base model is the
    ``base_model_name_or_path`` it names. (llmtune LoRA run dirs also hold a merged model at their
    top, which loads as is.)
    """
    path = Path(name).expanduser()
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file() or (path / "config.json").is_file():
        return name, None
    try:
        adapter_cfg = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {config_file}: {exc}; re-save the adapter with save_pretrained") from None
    base = adapter_cfg.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{config_file} names no base_model_name_or_path; set it to the base model's folder or hub id")
    task = adapter_cfg.get("task_type")
    if task not in (None, "CAUSAL_LM"):
        raise ModelError(f"the adapter in {path} was trained for {task}, not text generation (CAUSAL_LM)")
    return base, path


def tokenizer_source(adapter: Optional[Path], model_path: str) -> str:
    """The adapter's own tokenizer when it saved one (llmtune does), else the base model's."""
    from llmtune.tokenizer import TOKENIZER_FILES

    if adapter is not None and any((adapter / f).is_file() for f in TOKENIZER_FILES):
        return str(adapter)
    return model_path


def merge_into(model: Any, adapter: Path) -> Any:
    """Load the peft adapter in ``adapter`` onto ``model`` and merge it into the weights (no LoRA cost per token).

    Raises:
        ModelError: peft is missing, or the adapter does not fit the model.
    """
    try:
        from peft import PeftModel
    except ImportError:
        raise ModelError(f"{adapter} is a LoRA adapter, which needs peft: pip install peft") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft calls a transformers API deprecated for v6
        try:
            wrapped = PeftModel.from_pretrained(model, str(adapter))
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise ModelError(f"cannot load the LoRA adapters in {adapter} onto their base model: {reason}") from exc
    return merge_lora(wrapped)


def freeze_input_embeddings(model: Any) -> None:
    """Keep the token embedding matrix fixed: no gradient, optimizer state or clipping over the vocabulary."""
    weight = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    if output is not None and output.weight is weight:
        log("train.freeze_embeddings: skipped, the input embeddings are tied to the output layer (LM head), "
            "which must train")
        return
    weight.requires_grad_(False)
    log(f"frozen: input embeddings ({format_params(weight.numel())} parameters)")


AUTO_FREEZE_MIN_BLOCKS = 6  # train.freeze_layers=auto fixes the lowest block only in models at least this deep


def freeze_lower_layers(model: Any, n_layers: Union[int, str]) -> int:
    """Fix every weight below transformer block ``n_layers`` (embeddings included): no backward through them.

    Blocks are the model's longest ``ModuleList``; "below" is registration order, which puts the
    embeddings first in every transformers model. The top block always trains (``n_layers`` is capped
    at the block count minus one, with a log line). ``"auto"``: the lowest block when the model has at least
    ``AUTO_FREEZE_MIN_BLOCKS`` blocks (in a shallow model one block is too large a share), else none.
    Returns how many parameters were frozen.

    Raises:
        ConfigError: The model has no stack of blocks (no ``ModuleList``).
    """
    import torch

    blocks = max((m for m in model.modules() if isinstance(m, torch.nn.ModuleList)), key=len, default=[])
    if not blocks:
        raise ConfigError(f"train.freeze_layers={n_layers}: no stack of transformer blocks found in "
                          f"{type(model).__name__}; pass --set train.freeze_layers=0")
    if n_layers == "auto":
        n_layers = 1 if len(blocks) >= AUTO_FREEZE_MIN_BLOCKS else 0
        if not n_layers:
            return 0
    if n_layers >= len(blocks):  # keep the top block trainable
        log(f"train.freeze_layers={n_layers} would freeze all {len(blocks)} transformer blocks; "
            f"freezing {len(blocks) - 1} so the top block trains")
        n_layers = len(blocks) - 1
    first_trained = {id(p) for p in blocks[n_layers].parameters()}
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is model.get_input_embeddings().weight
    frozen = 0
    for param in model.parameters():
        if id(param) in first_trained:
            break
        if not (tied and param is output.weight):
            param.requires_grad_(False)
            frozen += param.numel()
    log(f"frozen: embeddings and the lowest {n_layers} of {len(blocks)} blocks ({format_params(frozen)} parameters)")
    return frozen


def base_quantization(method: Optional[str], cuda: bool) -> dict[str, Any]:
    """``from_pretrained`` kwargs that quantize a LoRA run's frozen base (``lora.quantize_base``), or {}.

    ``int8`` is torchao's weight-only int8 (CPU and GPU; peft wraps the quantized linear layers in
    ``TorchaoLoraLinear``), ``nf4`` bitsandbytes' 4-bit NormalFloat (QLoRA; CUDA only). The task heads
    (``_HEAD_NAMES``) stay in full precision: they train in full through ``modules_to_save``.

    Raises:
        ConfigError: nf4 without CUDA, or the library missing.
    """
    from llmtune.compress import require

    if method is None:
        return {}
    if method == "nf4":
        if not cuda:
            raise ConfigError("--quantize-base nf4 needs a CUDA GPU (bitsandbytes' 4-bit kernels) and this machine "
                              "has only a CPU; use --quantize-base int8 (torchao, CPU and GPU)")
        require("bitsandbytes", "--quantize-base nf4")
        import torch
        from transformers import BitsAndBytesConfig

        return {"quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=list(_HEAD_NAMES))}
    quant = require("torchao.quantization", "--quantize-base int8")
    from transformers import TorchAoConfig

    return {"quantization_config": TorchAoConfig(quant_type=quant.Int8WeightOnlyConfig(),
                                                 modules_to_not_convert=list(_HEAD_NAMES))}


def _is_torchao(weight: Any) -> bool:
    return type(weight).__module__.startswith("torchao")


# Dequantize a frozen int8 weight this many bytes at a time: slices this small come back from the heap
# each call, whereas whole weights (4-12 MB at 317M parameters) get fresh pages each time or pile up.
_SLICE_BYTES = 1 << 20
# glibc's mmap threshold while a quantized base loads and trains (see quantizing_load).
_MMAP_THRESHOLD = 4 << 20


def _int8_parts(weight: Any) -> Optional[tuple[Any, Any]]:
    """``(qdata, per-row scale)`` of a weight-only torchao ``Int8Tensor`` (``W = qdata * scale``), else None."""
    qdata, scale = getattr(weight, "qdata", None), getattr(weight, "scale", None)
    if (type(weight).__name__ != "Int8Tensor" or getattr(weight, "act_quant_kwargs", None) is not None
            or qdata is None or scale is None or qdata.dim() != 2 or scale.numel() != qdata.shape[0]):
        return None
    return qdata, scale.reshape(1, -1)


def _slice_rows(qdata: Any, dtype: Any) -> int:
    return max(1, _SLICE_BYTES // (qdata.shape[1] * dtype.itemsize))


def _int8_linear(x: Any, weight: Any) -> Any:
    """``x @ W.T`` for a frozen int8 ``weight``, dequantizing ``_SLICE_BYTES`` of it at a time."""
    import torch

    parts = _int8_parts(weight)
    if parts is None:  # another torchao layout: its own kernel
        return torch.nn.functional.linear(x, weight)
    qdata, scale = parts
    flat, rows = x.reshape(-1, x.shape[-1]), _slice_rows(qdata, x.dtype)
    y = torch.cat([flat @ qdata[r:r + rows].to(x.dtype).t() for r in range(0, qdata.shape[0], rows)], dim=-1)
    return (y * scale.to(x.dtype)).reshape(*x.shape[:-1], qdata.shape[0])


def _int8_input_grad(grad: Any, weight: Any) -> Any:
    """``grad @ W`` (the input's gradient of ``x @ W.T``) for a frozen int8 ``weight``, slice by slice."""
    parts = _int8_parts(weight)
    if parts is None:
        return grad @ weight.dequantize().to(grad.dtype)
    qdata, scale = parts
    flat, rows = (grad.reshape(-1, grad.shape[-1]) * scale.to(grad.dtype)), _slice_rows(qdata, grad.dtype)
    result = flat.new_zeros(flat.shape[0], qdata.shape[1])
    for r in range(0, qdata.shape[0], rows):
        result.addmm_(flat[:, r:r + rows], qdata[r:r + rows].to(grad.dtype))
    return result.reshape(*grad.shape[:-1], qdata.shape[1])


@functools.cache
def _frozen_quantized_linear() -> Any:
    """The autograd function of a frozen torchao-quantized linear layer (built on first use: torch loads lazily).

    torchao computes ``x @ W.T`` for an int8 weight by converting ``W`` to the activations' dtype and
    multiplying, above autograd, so autograd keeps that full-precision copy for the backward pass: a
    LoRA step on the int8 base would hold an fp32 copy of every base weight, more than the fp32 base.
    This function keeps the quantized weight itself and never holds more than ``_SLICE_BYTES`` of it
    dequantized, forward or backward (the weight is frozen: only the input's gradient is computed).
    """
    import torch

    class FrozenQuantizedLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, layer: Any) -> Any:
            ctx.weight = layer.weight  # the quantized tensor the model holds anyway: nothing new is kept
            return _int8_linear(x, layer.weight)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
            return _int8_input_grad(grad, ctx.weight), None

    return FrozenQuantizedLinear


def _frozen_quantized_forward(layer: Any, x: Any) -> Any:
    """``layer(x)`` for a linear layer with a frozen torchao weight, keeping no full-precision copy for backward."""
    if not _is_torchao(layer.weight):  # dequantized since (merged): a plain linear layer again
        return layer.__class__.forward(layer, x)
    y = _frozen_quantized_linear().apply(x, layer)
    return y if layer.bias is None else y + layer.bias


def _release_checkpoint(model: Any) -> int:
    """Copy ``model``'s full-precision weights out of the memory-mapped checkpoint they were loaded from.

    transformers loads safetensors zero-copy: unquantized weights (embeddings, norms) stay views of the
    file's mapping, which keeps the whole mapping alive, and with it every page the quantizer read: the
    fp32 base stays resident beside its int8 copy. Copying the few unquantized tensors (a small share of
    the model) lets the mapping close. Returns how many tensors were copied.
    """
    import torch

    seen: set[int] = set()
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:  # a tied weight once: one Parameter, still tied
            if not _is_torchao(tensor) and id(tensor) not in seen:
                seen.add(id(tensor))
                tensor.data = tensor.data.clone()
    return len(seen)


def prepare_quantized_base(model: Any) -> int:
    """Make a LoRA step on a torchao-quantized base hold the quantized base only, not an fp32 copy of it.

    Routes every frozen quantized linear layer through ``_frozen_quantized_linear`` (no fp32 weight kept
    for backward) and releases the checkpoint's memory map (``_release_checkpoint``). A model without
    torchao weights is left as it is. Returns how many layers were routed.
    """
    import torch

    layers = [m for m in model.modules()
              if isinstance(m, torch.nn.Linear) and _is_torchao(m.weight) and not m.weight.requires_grad]
    for layer in layers:
        layer.forward = functools.partial(_frozen_quantized_forward, layer)
    if layers:
        _release_checkpoint(model)
        _return_freed_memory()
    return len(layers)


@contextmanager
def quantizing_load(quantization: dict[str, Any]) -> Iterator[None]:
    """Around ``from_pretrained`` with ``base_quantization``'s kwargs: load a torchao base without its fp32 copy.

    transformers quantizes each weight as it loads it, but reads the checkpoint through a memory map:
    every page the quantizer read stays resident while the mapping lives (the whole fp32 model, file
    pages counted in the process's RSS), and glibc keeps the fp32 temporaries it freed (its mmap
    threshold grows after the first large free). Here the checkpoint is read with ``pread`` (safetensors'
    non-mapping backend, which transformers itself uses on Windows) and allocations of ``_MMAP_THRESHOLD``
    and more get their own mapping, returned to the OS when freed, for the rest of the process (training
    too: with ``_SLICE_BYTES`` slices, the int8 layers' temporaries stay below it and reuse the heap).
    Peak RSS while loading a 317M-parameter base fell from 2.95 to 0.76 GB. Other loads are left as they are.
    """
    config = quantization.get("quantization_config")
    if type(config).__name__ != "TorchAoConfig":
        yield
        return
    import transformers.modeling_utils as loading

    opener = loading.safe_open

    def read_with_pread(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("device", "cpu") == "cpu":
            kwargs["backend"] = "pread"
        return opener(*args, **kwargs)

    _set_mmap_threshold(_MMAP_THRESHOLD)
    loading.safe_open = read_with_pread
    try:
        yield
    finally:
        loading.safe_open = opener
        _return_freed_memory()


def _libc() -> Any:
    """glibc through ctypes, or None (another C library or platform: the memory tuning is skipped)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _set_mmap_threshold(size: int) -> None:
    """Serve allocations of ``size`` bytes and more from their own mappings (glibc ``M_MMAP_THRESHOLD``)."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(-3, size)  # M_MMAP_THRESHOLD; fixing it also stops glibc raising it after large frees


def _return_freed_memory() -> None:
    """Hand the heap pages freed since loading back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    Quantizing while loading frees an fp32 temporary per weight; glibc keeps those pages in the process,
    so without this the int8 run kept ~0.9 GB more than it used (317M-parameter base: 1.59 -> 0.70 GB
    anonymous memory right after loading).
    """
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def dequantize_base(model: Any) -> int:
    """Replace every torchao-quantized linear weight of ``model`` by its dequantized fp32 tensor, in place.

    Also drops the model's quantization config, so ``save_pretrained`` writes a plain fp32 model.
    Returns how many weights were replaced.
    """
    import torch

    count = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and _is_torchao(module.weight):
            module.weight = torch.nn.Parameter(module.weight.dequantize().to(torch.float32), requires_grad=False)
            count += 1
    _drop_quantization_config(model)
    return count


def _drop_quantization_config(model: Any) -> None:
    """Forget that ``model`` was loaded torchao-quantized, so ``save_pretrained`` and its config write a plain model."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and _quantized_with_torchao(model):
        quantizer.remove_quantization_config(model)


def _quantized_with_torchao(model: Any) -> bool:
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    method = config.get("quant_method") if isinstance(config, dict) else getattr(config, "quant_method", None)
    return str(getattr(method, "value", method)) == "torchao"


def _merged_weight(layer: Any) -> Any:
    """A LoRA layer's base weight (dequantized when torchao-quantized) plus its active adapters' ``BA``, in fp32."""
    import torch

    base = layer.get_base_layer()
    with torch.no_grad():
        weight = base.weight.dequantize() if _is_torchao(base.weight) else base.weight.detach()
        weight = weight.to(torch.float32)
        for name in layer.active_adapters:
            if name in layer.lora_A:
                weight = weight + layer.get_delta_weight(name).to(torch.float32)
    return weight


def _on_quantized_base(layers: list[Any]) -> bool:
    return any(_is_torchao(layer.get_base_layer().weight) for layer in layers)


def merge_lora(model: Any) -> Any:
    """The peft ``model``'s adapters merged into full-precision weights: the plain base model.

    On a full-precision base this is peft's ``merge_and_unload``. On a torchao-quantized base (a
    ``--quantize-base int8`` run) the adapted layers computed ``x @ (dequantize(W) + BA)``; peft's merge
    would quantize ``W + BA`` again (losing the adapters' small updates), so each merged weight is built
    in fp32 from the dequantized base instead, and every other quantized weight is dequantized: the
    result is an fp32 model with the adapted model's outputs (all of it in fp32 memory at once: to
    save it, ``save_merged`` needs ~one shard of fp32 beside the int8 model).
    """
    import torch
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    if not _on_quantized_base(layers):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return model.merge_and_unload()
    for layer in layers:
        layer.get_base_layer().weight = torch.nn.Parameter(_merged_weight(layer), requires_grad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        plain = model.unload()
    replaced = dequantize_base(plain)
    log(f"merged the adapters into the dequantized int8 base ({len(layers)} adapted layers; {replaced} other "
        "int8 weights back to fp32)")
    return plain


MIN_SHARD_BYTES = 64 * 2**20  # the smallest shard save_merged writes (a model this small has few of them)


def save_merged(model: Any, folder: Path, shard_bytes: Optional[int] = None) -> None:
    """Save the peft ``model`` with its adapters merged in, as a plain fp32 model in ``folder`` (``merge_lora``'s weights).

    On a full-precision base: ``merge_lora(model).save_pretrained``. On a torchao-quantized base the merged
    model is ~4x the int8 one; building it whole would make saving the run's memory peak (as large as the
    fp32 base), so the fp32 weights are built and written one safetensors shard at a time beside the int8
    model, in the layout ``save_pretrained`` writes (sharded with an index when needed, tied weights once,
    no quantization config). ``shard_bytes`` (default: a quarter of the quantized model's size, at least
    ``MIN_SHARD_BYTES``) bounds the fp32 built at once. ``model`` is unloaded (its adapters removed) either way.
    """
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    if not _on_quantized_base(layers):
        merge_lora(model).save_pretrained(str(folder))
        return
    adapted = {id(layer.get_base_layer()): layer for layer in layers}  # the adapters outlive unload()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        plain = model.unload()
    tensors = _unique_tensors(plain)
    if shard_bytes is None:
        in_memory = sum(t.numel() * (1 if _is_torchao(t) else t.element_size()) for t in tensors.values())
        shard_bytes = max(MIN_SHARD_BYTES, in_memory // 4)
    shards = _shard_names(tensors, shard_bytes)
    folder.mkdir(parents=True, exist_ok=True)
    _write_shards(plain, tensors, shards, adapted, folder)
    _drop_quantization_config(plain)
    plain.config.save_pretrained(str(folder))
    if plain.can_generate() and plain.generation_config is not None:
        plain.generation_config.save_pretrained(str(folder))
    log(f"merged the adapters into the dequantized int8 base ({len(layers)} adapted layers), saved in "
        f"{len(set(shards.values()))} shard(s)")


def _unique_tensors(model: Any) -> dict[str, Any]:
    """``model``'s state dict with each tensor once (a tied weight under its first name, as transformers saves it)."""
    seen: set[int] = set()
    unique = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            unique[name] = tensor
    return unique


def _shard_names(tensors: dict[str, Any], shard_bytes: int) -> dict[str, str]:
    """File name per tensor: ``model.safetensors``, or ``model-0000i-of-0000n.safetensors`` in order of ``shard_bytes``."""
    index, size, numbers = 0, 0, {}
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * 4  # written in fp32
        if size and size + nbytes > shard_bytes:
            index, size = index + 1, 0
        numbers[name], size = index, size + nbytes
    total = index + 1
    if total == 1:
        return dict.fromkeys(tensors, "model.safetensors")
    return {name: f"model-{i + 1:05d}-of-{total:05d}.safetensors" for name, i in numbers.items()}


def _write_shards(model: Any, tensors: dict[str, Any], shards: dict[str, str], adapted: dict[int, Any],
                  folder: Path) -> None:
    """Build each shard's fp32 tensors (adapted layers merged, quantized ones dequantized), write it, drop it."""
    import torch
    from safetensors.torch import save_file

    def fp32(name: str, tensor: Any) -> Any:
        module_name, _, leaf = name.rpartition(".")
        layer = adapted.get(id(model.get_submodule(module_name))) if leaf == "weight" else None
        if layer is not None:
            return _merged_weight(layer).contiguous()
        with torch.no_grad():
            return (tensor.dequantize() if _is_torchao(tensor) else tensor.detach()).to(torch.float32).contiguous()

    for file in dict.fromkeys(shards.values()):
        save_file({n: fp32(n, t) for n, t in tensors.items() if shards[n] == file}, str(folder / file),
                  metadata={"format": "pt"})
    if len(set(shards.values())) > 1:
        total = sum(t.numel() * 4 for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": shards}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
