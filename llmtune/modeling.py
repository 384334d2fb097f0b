"""Build models from scratch (architecture + size preset) or load pretrained ones safely.

Size presets are *parameter classes* shared by all architectures, so ``--size small`` means roughly
the same budget whichever ``--arch`` is picked. Parameters counted with ``count_parameters`` (tied
embeddings once) at an 8000-token vocabulary / at the architecture's usual vocabulary:

=====  ==========================  ==========================  ==========================
size   gpt2 (vocab 8000 / 50257)   llama (8000 / 32000)        bert (8000 / 30522)
=====  ==========================  ==========================  ==========================
tiny   4x256: 5.3M / 16.1M         4x256: 5.2M / 11.4M         4x256 BERT-mini: 5.4M / 11.2M
small  12x768 GPT-2: 92.0M/124.4M  12x768: 91.1M / 109.5M      12x768 BERT-base: 92.2M/109.5M
base   24x1024 GPT-2 medium:       24x1024: 316.5M / 341.1M    24x1024 BERT-large:
       311.6M / 354.8M                                         312.1M / 335.2M
=====  ==========================  ==========================  ==========================

``tiny`` is the nanoGPT-style preset: it learns visibly in minutes on two CPU cores.

Heavy libraries (torch, transformers) are imported inside the functions that need them so that
``llmtune --help`` stays fast.
"""

from __future__ import annotations

import difflib
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from llmtune.dist import log
from llmtune.errors import ConfigError, ModelError
from llmtune.hub import hub_offline, looks_like_local_path, require_hub, unreachable_error

if TYPE_CHECKING:
    from llmtune.config.schema import RunConfig

# Fields are the config class's own names. Position counts are minimums: build_config raises them
# to max_length when the user did not set them, because unused learned positions are cheap while a
# too-short table crashes mid-run.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "gpt2": {
        "tiny": {"n_layer": 4, "n_head": 4, "n_embd": 256, "n_positions": 256},
        "small": {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024},  # GPT-2 124M
        "base": {"n_layer": 24, "n_head": 16, "n_embd": 1024, "n_positions": 1024},  # GPT-2 medium
    },
    "llama": {
        # Tied embeddings keep the small sizes small (as SmolLM does); 8/3 * hidden MLP as Llama.
        "tiny": {"num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4, "hidden_size": 256,
                 "intermediate_size": 688, "max_position_embeddings": 256, "tie_word_embeddings": True},
        "small": {"num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 12, "hidden_size": 768,
                  "intermediate_size": 2048, "max_position_embeddings": 2048, "tie_word_embeddings": True},
        "base": {"num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16, "hidden_size": 1024,
                 "intermediate_size": 2816, "max_position_embeddings": 2048, "tie_word_embeddings": True},
    },
    "bert": {
        "tiny": {"num_hidden_layers": 4, "num_attention_heads": 4, "hidden_size": 256, "intermediate_size": 1024,
                 "max_position_embeddings": 512},  # BERT-mini
        "small": {"num_hidden_layers": 12, "num_attention_heads": 12, "hidden_size": 768, "intermediate_size": 3072,
                  "max_position_embeddings": 512},  # BERT-base
        "base": {"num_hidden_layers": 24, "num_attention_heads": 16, "hidden_size": 1024, "intermediate_size": 4096,
                 "max_position_embeddings": 512},  # BERT-large
    },
}

IGNORE = -100  # the label value torch's cross-entropy skips (prompt tokens, padding, unscored positions)
_CONFIG_CLASSES = {"gpt2": "GPT2Config", "llama": "LlamaConfig", "bert": "BertConfig"}
_TASK_AUTO_CLASSES = {"causal_lm": "AutoModelForCausalLM", "masked_lm": "AutoModelForMaskedLM"}
# Settable although absent from to_dict(): num_labels is a property over id2label.
_EXTRA_CONFIG_FIELDS = {"num_labels"}
# Pickle files the Trainer writes next to safetensors weights; they are not model weights.
_TRAINER_PICKLES = {"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt"}


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _choose(kind: str, value: str, choices: Any) -> None:
    if value not in choices:
        raise ConfigError(f"unknown model {kind} '{value}'{_did_you_mean(value, choices)} "
                          f"Choose one of: {', '.join(choices)}")


def _positions_key(config_cls: Any) -> str:
    return config_cls.attribute_map.get("max_position_embeddings", "max_position_embeddings")


def _normalise_overrides(config_cls: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """Map alias names (e.g. ``hidden_size`` for GPT-2) to the field names, rejecting unknown ones."""
    aliases = dict(config_cls.attribute_map)
    known = set(config_cls().to_dict()) | set(aliases) | _EXTRA_CONFIG_FIELDS
    normalised: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"model.config.{key}: {config_cls.__name__} has no field '{key}'"
                              f"{_did_you_mean(key, known)}")
        normalised[aliases.get(key, key)] = value
    return normalised


def _check_shapes(fields: dict[str, Any], config_cls: Any) -> None:
    """Catch head/width mismatches here; transformers reports them as an opaque error at build time."""
    names = config_cls.attribute_map
    hidden = fields.get(names.get("hidden_size", "hidden_size"))
    heads = fields.get(names.get("num_attention_heads", "num_attention_heads"))
    if hidden and heads and hidden % heads:
        raise ConfigError(f"model.config: hidden size {hidden} is not divisible by {heads} attention heads; "
                          "pick a head count that divides it")
    kv = fields.get("num_key_value_heads")
    if kv and heads and heads % kv:
        raise ConfigError(f"model.config.num_key_value_heads: {heads} attention heads are not a multiple of {kv} "
                          "key/value heads; pick a divisor of num_attention_heads")


def build_config(arch: str, size: str, overrides: dict[str, Any], tokenizer: Any, max_length: int) -> Any:
    """Build a transformers config for a model trained from scratch.

    Args:
        arch: ``gpt2``, ``llama`` or ``bert``.
        size: ``tiny``, ``small`` or ``base`` (see ``PRESETS``).
        overrides: Config fields that win over the preset, e.g. ``{"n_layer": 2}``. Alias names such
            as ``hidden_size`` for GPT-2 are accepted.
        tokenizer: The tokenizer the model will use; sets vocab size and bos/eos/pad ids.
        max_length: The longest sequence (block size) the model must accept.

    Returns:
        A ``GPT2Config``, ``LlamaConfig`` or ``BertConfig``.

    Raises:
        ConfigError: Unknown arch/size/field, a vocabulary smaller than the tokenizer's, too few
            positions for ``max_length``, or heads that do not divide the hidden size.
    """
    import transformers

    _choose("arch", arch, PRESETS)
    _choose("size", size, PRESETS[arch])
    config_cls = getattr(transformers, _CONFIG_CLASSES[arch])
    fields = _normalise_overrides(config_cls, overrides)
    vocab = len(tokenizer)
    if fields.get("vocab_size", vocab) < vocab:
        raise ConfigError(f"model.config.vocab_size: {fields['vocab_size']} is smaller than the tokenizer's "
                          f"{vocab} tokens; remove the override or set it to at least {vocab}")
    pos_key = _positions_key(config_cls)
    preset = PRESETS[arch][size]
    positions = fields.get(pos_key, max(preset[pos_key], max_length))
    if positions < max_length:
        raise ConfigError(f"train.max_length {max_length} is longer than the model's {positions} positions; "
                          f"set model.config.{pos_key} to at least {max_length} or lower train.max_length")
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    merged = {**preset, pos_key: positions, "vocab_size": vocab, **special, **fields}
    _check_shapes(merged, config_cls)
    return config_cls(**merged)


def build_model(config: Any, task: str = "causal_lm") -> Any:
    """Instantiate a randomly initialised model (seed torch first for reproducibility).

    Args:
        config: A config from ``build_config`` (or any transformers config).
        task: ``causal_lm`` or ``masked_lm``.

    Returns:
        A ``PreTrainedModel`` with an LM head, in fp32.

    Raises:
        ConfigError: Unknown task, or an architecture that cannot do it (e.g. GPT-2 masked LM).
    """
    import transformers

    _choose("task", task, _TASK_AUTO_CLASSES)
    auto_cls = getattr(transformers, _TASK_AUTO_CLASSES[task])
    try:
        return auto_cls.from_config(config)
    except ValueError as exc:
        if "Unrecognized configuration class" not in str(exc):
            raise
        hint = "use arch bert for masked_lm" if task == "masked_lm" else "use arch gpt2 or llama for causal_lm"
        raise ConfigError(f"model.arch: {config.model_type} cannot be trained as {task}; {hint}") from None


def count_parameters(model: Any) -> tuple[int, int]:
    """Count parameters once each (tied weights are shared tensors and counted once).

    Returns:
        ``(total, trainable)``.
    """
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def format_params(n: int | float) -> str:
    """Human-readable parameter count: ``5_300_000 -> "5.3M"``, ``124_439_808 -> "124.4M"``."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{suffix}"
    return str(int(n))


def resolve_model_path(name_or_path: str) -> str:
    """Turn what the user passed into a local model folder or a hub id.

    Accepted local forms: a Hugging Face folder (holds ``config.json``), or an llmtune run dir (holds
    ``config.yaml``) whose model was saved either at its top level or in a ``model/`` subfolder (the
    subfolder wins when both exist).

    Args:
        name_or_path: A local folder or a hub id such as ``gpt2`` or ``org/name``.

    Returns:
        The folder holding ``config.json`` as a string, or the hub id unchanged.

    Raises:
        ModelError: A path that does not exist, is not a model folder, or a hub id while the hub is
            out of reach (and offline mode is off).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        for candidate in (path / "model", path):
            if (candidate / "config.json").is_file():
                return str(candidate)
        if (path / "config.yaml").is_file():
            raise ModelError(f"run dir {name_or_path} has no saved model (no model/config.json); "
                             "the run may not have finished. Pass one of its checkpoint-* folders instead")
        raise ModelError(f"{name_or_path} has no config.json: not a Hugging Face model folder; pass the folder "
                         "written by save_pretrained (or an llmtune run dir)")
    if path.exists():
        raise ModelError(f"{name_or_path} is a file; pass the folder that holds config.json and the weights")
    if looks_like_local_path(name_or_path):
        raise ModelError(f"model folder not found: {name_or_path}; check the path (relative to {os.getcwd()})")
    require_hub(name_or_path, "model")
    return name_or_path


def pickled_weights(folder: Path) -> list[str]:
    """Names of pickled weight files in ``folder`` when it has no safetensors alternative."""
    if any(folder.glob("*.safetensors")):
        return []
    names = {p.name for pattern in ("*.bin", "*.pt", "*.pth", "*.ckpt") for p in folder.glob(pattern)}
    return sorted(n for n in names if n not in _TRAINER_PICKLES and not n.startswith("rng_state"))


def _weights_kwargs(path: str, is_local: bool, allow_pickle: bool) -> dict[str, Any]:
    """Choose ``use_safetensors`` so pickled weights only load when the user allowed them."""
    if not is_local:
        return {} if allow_pickle else {"use_safetensors": True}
    folder = Path(path)
    pickled = pickled_weights(folder)
    if pickled and not allow_pickle:
        raise ModelError(f"{path} holds pickled weights ({', '.join(pickled)}) that can run code when loaded; "
                         "pass --allow-pickle if you trust it, or convert to safetensors")
    if pickled:
        return {"use_safetensors": False}
    return {"use_safetensors": True} if any(folder.glob("*.safetensors")) else {}


def _map_load_error(exc: Exception, name: str, is_local: bool, auto_class: str) -> Exception:
    """Translate transformers' loading errors into one actionable line."""
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if "trust_remote_code" in text or "requires you to execute" in text:
        return ModelError(f"model '{name}' ships its own Python code; pass --trust-remote-code "
                          "(model.trust_remote_code: true) if you trust its author")
    if "Unrecognized configuration class" in text:
        return ModelError(f"model '{name}' cannot be loaded as {auto_class}: {first}")
    if isinstance(exc, OSError) and not is_local:
        if hub_offline():
            return unreachable_error(name, "model")
        if "safetensors" in text:
            return ModelError(f"model '{name}' has no safetensors weights; pass --allow-pickle if you trust "
                              "its pickled weights")
    return ModelError(f"could not load model '{name}' with {auto_class}: {first}")


def dropout_fields(config: Any, probability: Optional[float]) -> dict[str, float]:
    """Config overrides setting every dropout probability of ``config`` to ``probability``.

    Architectures name them differently (``hidden_dropout_prob``, ``attention_probs_dropout_prob``,
    ``classifier_dropout`` for BERT; ``resid_pdrop``/``embd_pdrop``/``attn_pdrop`` for GPT-2;
    ``dropout``/``attention_dropout`` for DistilBERT and Llama ...): every field whose name says dropout
    and holds a number (or None, as BERT's ``classifier_dropout``) is included. None: no overrides.
    """
    if probability is None:
        return {}
    fields = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {key: probability for key, value in fields.items()
            if ("dropout" in key or key.endswith("pdrop")) and not key.startswith("lora")
            and (value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)))}


def load_pretrained(name_or_path: str, auto_class: str | Any, *, trust_remote_code: bool = False,
                    allow_pickle: bool = False, **kwargs: Any) -> Any:
    """Load a pretrained model, tokenizer or config from a local folder, run dir or hub id.

    Args:
        name_or_path: Anything ``resolve_model_path`` accepts.
        auto_class: A transformers class or its name, e.g. ``"AutoModelForCausalLM"``,
            ``"AutoTokenizer"``.
        trust_remote_code: Allow code shipped with the model to run.
        allow_pickle: Allow pickled (``.bin``/``.pt``) weights, which can execute code when loaded.
        **kwargs: Passed to ``from_pretrained`` (e.g. ``num_labels``, ``ignore_mismatched_sizes``).

    Returns:
        Whatever ``auto_class.from_pretrained`` returns.

    Raises:
        ModelError: Missing folder, refused pickled weights, remote code not allowed, hub out of
            reach, or any other load failure (as one line).
    """
    import transformers

    cls = getattr(transformers, auto_class) if isinstance(auto_class, str) else auto_class
    cls_name = getattr(cls, "__name__", str(auto_class))
    path = resolve_model_path(name_or_path)
    is_local = Path(path).is_dir()
    if is_local:  # torchao-quantized and ONNX folders (llmtune quantize / export --format onnx)
        from llmtune.compress import load_compressed

        compressed = load_compressed(path, cls, kwargs)
        if compressed is not None:
            return compressed
    if cls_name.startswith("AutoModel") or hasattr(cls, "config_class"):
        kwargs = {**_weights_kwargs(path, is_local, allow_pickle), **kwargs}
    try:
        return cls.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError) as exc:
        raise _map_load_error(exc, name_or_path, is_local, cls_name) from exc


def detect_device() -> dict[str, Any]:
    """Describe the accelerator.

    Returns:
        ``{"cuda": bool, "bf16": bool, "name": str, "count": int}`` where ``bf16`` means *fast*
        bf16 (a GPU that supports it; CPUs are reported False because without AVX512-BF16/AMX bf16
        runs ~15x slower than fp32).
    """
    import torch

    if torch.cuda.is_available():
        return {"cuda": True, "bf16": bool(torch.cuda.is_bf16_supported()),
                "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    capability = torch.backends.cpu.get_cpu_capability()
    return {"cuda": False, "bf16": False, "name": f"cpu ({capability}, {os.cpu_count()} cores)", "count": 0}


def resolve_precision(precision: str, device: dict[str, Any] | None = None) -> str:
    """Turn ``train.precision`` into what will actually run.

    ``auto`` picks bf16 on GPUs that support it, fp16 (with loss scaling) on older GPUs and fp32 on
    CPU. Explicit choices that would be slow or impossible are refused rather than silently changed.

    Args:
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        device: Output of ``detect_device`` (detected when None; tests pass a fake).

    Returns:
        ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Raises:
        ConfigError: bf16/fp16 without a GPU that supports it, or an unknown value.
    """
    device = detect_device() if device is None else device
    if precision == "auto":
        if not device["cuda"]:
            return "fp32"
        return "bf16" if device["bf16"] else "fp16"
    if precision == "fp32":
        return "fp32"
    if precision == "bf16":
        if not device["cuda"]:
            raise ConfigError("train.precision: bf16 without a GPU runs ~15x slower than fp32 on CPUs lacking "
                              "AVX512-BF16/AMX; use --precision fp32 (or auto)")
        if not device["bf16"]:
            raise ConfigError(f"train.precision: {device['name']} does not support bf16; use fp16 or auto")
        return "bf16"
    if precision == "fp16":
        if not device["cuda"]:
            raise ConfigError("train.precision: fp16 mixed precision needs a CUDA GPU; use fp32 (or auto) on CPU")
        return "fp16"
    raise ConfigError(f"train.precision: unknown value '{precision}'; use auto, fp32, bf16 or fp16")


def _model_for_counting(model_or_config: Any) -> Any:
    """A model to count parameters on; configs are built on the meta device (no memory, no init)."""
    if hasattr(model_or_config, "parameters"):
        return model_or_config
    import torch

    task = "masked_lm" if model_or_config.model_type == "bert" else "causal_lm"
    with torch.device("meta"):
        return build_model(model_or_config, task)


def estimate_flops_per_token(model_or_config: Any, seq_len: int | None = None) -> float:
    """Training FLOPs per token, for MFU: ``6 * N + 12 * n_layer * d_model * seq_len``.

    ``N`` counts the parameters that do matrix work: all parameters except embedding lookups (token,
    position, token-type), plus the output projection once even when it is tied to the token
    embedding (it is still a matmul). The second term is attention scores and weighted sum (forward
    ``2 * 2 * L * d * T``, times 3 for forward + backward), counted for the full ``T x T`` square
    as in PaLM's MFU definition, although causal masking skips half of it.

    Args:
        model_or_config: A model (counts its actual parameters, LoRA included) or a config.
        seq_len: Tokens per sequence (default: the model's maximum positions).

    Returns:
        FLOPs per trained token.
    """
    import torch

    model = _model_for_counting(model_or_config)
    config = model.config
    total, _ = count_parameters(model)
    embeddings = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    n = total - sum(w.numel() for w in embeddings)
    output = model.get_output_embeddings()
    if output is not None and any(output.weight is w for w in embeddings):
        n += output.weight.numel()
    seq_len = seq_len or config.max_position_embeddings
    return float(6 * n + 12 * config.num_hidden_layers * config.hidden_size * seq_len)


def model_tokenizer(cfg: RunConfig, model_path: str, source: Optional[str] = None, for_batches: bool = True) -> Any:
    """The model's own tokenizer (or ``model.tokenizer``), padding with its end-of-text token if it has no pad token.

    Args:
        cfg: ``model.tokenizer`` (overrides everything) and ``model.trust_remote_code``.
        model_path: The model folder or hub id.
        source: Where the tokenizer lives when not with the model (e.g. a LoRA adapter folder).
        for_batches: Training and evaluation batch rows, so a tokenizer without pad and end-of-text
            tokens is refused (generation of single prompts does without).
    """
    from llmtune.tokenizer import TOKENIZER_FILES, load_tokenizer

    source = cfg.model.tokenizer or source or model_path
    folder = Path(source).expanduser()
    if not cfg.model.tokenizer and folder.is_dir() and not any((folder / n).is_file() for n in TOKENIZER_FILES):
        raise ModelError(
            f"model folder {source} has no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}...); pass the one "
            "the model was trained with: --set model.tokenizer=FOLDER_OR_HUB_ID"
        )
    tok = load_tokenizer(source, trust_remote_code=cfg.model.trust_remote_code)
    if tok.pad_token is None and (tok.eos_token is not None or for_batches):
        # Decoder-only models (GPT-2, Llama) ship without one; the attention mask hides the padding,
        # and the sequence-classification heads find the last real token through pad_token_id.
        if tok.eos_token is None:
            raise ModelError(f"the tokenizer of {source} has neither a padding nor an end-of-text token; "
                             "pass a tokenizer that has one with --set model.tokenizer=...")
        tok.pad_token = tok.eos_token
        if for_batches:
            log(f"tokenizer has no padding token: padding with its end-of-text token {tok.eos_token!r}")
    return tok


def capped_max_length(requested: int, config: Any, tokenizer: Any) -> int:
    """``train.max_length`` capped at what the model can take (its positions, the tokenizer's limit)."""
    limit = context_length(config, tokenizer) or requested
    if requested > limit:
        log(f"train.max_length {requested} is more than the model's {limit} positions: truncating at {limit}")
    return min(requested, limit)


class _DropLoadReport(logging.Filter):
    """Drop transformers' per-key load table (the runner logs new and re-initialised weights itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' load table and progress bars inside the block (restored after)."""
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger("transformers.modeling_utils")
    drop, bars = _DropLoadReport(), hf_logging.is_progress_bar_enabled()
    logger.addFilter(drop)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.removeFilter(drop)
        if bars:
            hf_logging.enable_progress_bar()


# A tokenizer without a real limit reports a huge sentinel (int(1e30)) as model_max_length.
_NO_LIMIT = 10**8


_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_length(config: Any, tokenizer: Any = None) -> Optional[int]:
    """The longest sequence the model takes: its position table, or the tokenizer's limit if lower.

    Returns:
        Tokens, or None when neither states a limit.
    """
    limits = [v for v in (getattr(config, key, None) for key in _POSITION_KEYS) if isinstance(v, int) and v > 0][:1]
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < _NO_LIMIT:
        limits.append(tok_limit)
    return min(limits) if limits else None


def check_weights(model_path: str, name: Optional[str] = None) -> None:
    """Refuse a local model folder without weight files, before anything slow starts.

    Weights are safetensors files (or their index), or pickled weights other than the Trainer's own
    state files (``pickled_weights``).

    Raises:
        ModelError: ``model_path`` is a folder with no weights.
    """
    folder = Path(model_path)
    if not folder.is_dir():
        return
    if any(folder.glob("*.safetensors")) or any(folder.glob("*.index.json")) or pickled_weights(folder) \
            or (folder / "model.onnx").is_file():
        return
    raise ModelError(f"{name or model_path} has a config.json but no weights (no model weights file such as "
                     "model.safetensors or pytorch_model.bin); pass the folder save_pretrained wrote, a finished "
                     "llmtune run dir or one of its checkpoint-N folders")


def _how_to_train(task: str, name: str) -> str:
    """The command that makes a model with ``task``'s head, for ``check_head``'s message."""
    if task in ("lm", "generation", "causal_lm", "dpo"):
        masked = " or --arch bert" if task == "lm" else ""
        return (f"train one with llmtune pretrain --arch llama{masked}, or llmtune finetune --task generation "
                "--model <a causal LM such as gpt2>")
    return f"fine-tune it first: llmtune finetune --task {task} --model {name}"


def check_head(architectures: list[str], task: str, name: str, use: str = "evaluate") -> None:
    """Refuse a model whose config names no trained head for ``task`` (its ``architectures``).

    transformers would load such a model anyway, with a randomly initialised head and only a warning:
    an encoder such as all-MiniLM-L6-v2 loaded for generation prints noise. ``llmtune eval`` checks
    its task's head here and every generation load (generate, serve) checks ``generation``'s.

    Args:
        architectures: The config's ``architectures`` (empty: unknown, accepted).
        task: A registry task name; its ``heads`` are the accepted architecture name endings.
        name: The model as the user wrote it, for the message.
        use: What the head is needed for ("evaluate", "generate with").

    Raises:
        ModelError: E.g. ``--task qa`` on a sequence classifier, or ``generate`` on a BertModel.
    """
    from llmtune.tasks.registry import TASKS, task_of_architectures

    if not architectures or any(a.endswith(TASKS[task].heads) for a in architectures):
        return
    head = "causal LM" if task == "generation" else task
    has = task_of_architectures(architectures)
    action = "pass" if use == "evaluate" else "evaluate it with llmtune eval"
    hint = f"; it was saved for {has}: {action} --task {has}" if has else ""
    raise ModelError(f"{name} is a {architectures[0]}, which has no {head} head to {use}{hint} "
                     f"({_how_to_train(task, name)})")
