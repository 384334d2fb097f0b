"""``--dry-run``: check a training command end to end and estimate its cost, without training.

The config is resolved, the data loaded and validated (counts, token lengths) and the model built on
the meta device (shapes only: no memory, no weights read), then the parameter count, a memory estimate,
the steps per epoch and a time estimate are printed. Nothing is trained and no run dir is written
(datasets may cache their tokenized features, which the real run then reuses).

Memory per process (bytes), for AdamW with fp32 master weights (also under bf16/fp16 autocast):

    weights 4 N + gradients 4 T + AdamW moments 8 T
    + activations L b s (34 h + 5 a s) B / 2      (Korthikanti et al. 2022; B = 4 fp32, 2 bf16/fp16)
    + LM logits and their gradient 2 b s V 4      (causal/masked LM heads only)

with N parameters, T trainable, L layers, hidden size h, a heads, batch b, sequence length s, vocab V.
Gradient checkpointing keeps only each layer's input (L b s h B) plus one layer's activations.

Time per epoch = tokens per epoch x training FLOPs per token (``estimate_flops_per_token``) /
(processes x device peak (``peak_flops``: a measured fp32 GEMM on CPU, the datasheet on known GPUs) x an
assumed utilisation, ``ASSUMED_MFU``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from llmtune.config.schema import DEFAULT_PRETRAIN_ARCH, RunConfig
from llmtune.errors import ConfigError

# Share of the peak a real training step reaches: llmtune's tiny pretrain measures ~60 % of the fp32
# GEMM peak on CPU (bench/pretrain_throughput); small models reach far less of a GPU's datasheet peak.
ASSUMED_MFU = {"cpu": 0.5, "cuda": 0.3}
_EXACT_ROWS = 20_000  # pretrain: pack every row up to this many; beyond, pack a sample and extrapolate


@dataclass
class MemoryEstimate:
    """Bytes per process, by kind."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        """Sum of all kinds."""
        return self.weights + self.gradients + self.optimizer + self.activations


@dataclass
class _Plan:
    """What the dry run found: the model (meta), its data and its shapes."""

    model: Any
    model_name: str
    train_count: int
    eval_count: int
    unit: str
    mean_tokens: float
    max_tokens: int
    lm_head: bool
    notes: list[str] = field(default_factory=list)


def estimate_memory(total: int, trainable: int, *, batch: int, seq_len: int, layers: int, hidden: int, heads: int,
                    vocab: int = 0, precision: str = "fp32", checkpointing: bool = False) -> MemoryEstimate:
    """Training memory per process (see the module docstring for the formula).

    Args:
        total: All parameters. trainable: Those with gradients (LoRA/frozen layers: fewer).
        batch: Per-device batch size. seq_len: Tokens per row (the longest, for a worst case).
        layers, hidden, heads: Transformer shape. vocab: LM head width (0: no LM head).
        precision: ``fp32``, ``bf16`` or ``fp16`` (activation width). checkpointing: Gradient checkpointing.
    """
    act = 2 if precision in ("bf16", "fp16") else 4
    tokens = batch * seq_len
    per_layer = tokens * (34 * hidden + 5 * heads * seq_len) * act // 2
    kept = layers * tokens * hidden * act + per_layer if checkpointing else layers * per_layer
    logits = 2 * tokens * vocab * 4
    return MemoryEstimate(4 * total, 4 * trainable, 8 * trainable, kept + logits)


def steps_per_epoch(examples: int, batch: int, grad_accum: int = 1, world_size: int = 1) -> int:
    """Optimizer steps in one pass over ``examples`` rows (each process takes ``batch`` rows per micro-step)."""
    micro = math.ceil(examples / (batch * world_size))
    return max(1, math.ceil(micro / grad_accum))


def epoch_seconds(tokens: float, flops_per_token: float, peak: float, mfu: float, world_size: int = 1) -> float:
    """Seconds for ``tokens`` training tokens at ``mfu`` of ``peak`` FLOP/s on each of ``world_size`` devices."""
    return tokens * flops_per_token / (peak * mfu * world_size)


def available_memory() -> tuple[int, str]:
    """Free memory on the training device: ``(bytes, what)`` (free GPU memory, else available RAM)."""
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return int(free), f"free on {torch.cuda.get_device_name()}"
    try:
        import psutil

        return int(psutil.virtual_memory().available), "RAM available"
    except ImportError:  # psutil comes with accelerate; /proc is the fallback on Linux
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "RAM available"
    return 0, "unknown"


def dry_run(cfg: RunConfig, world_size: Optional[int] = None) -> dict[str, Any]:
    """Check ``cfg`` (a pretrain or finetune config), print the estimates and return them.

    Args:
        cfg: The resolved config.
        world_size: Processes the run would use (default: ``WORLD_SIZE`` or 1).

    Raises:
        LlmtuneError: Whatever the real run would refuse before training (config, data, model).
    """
    from llmtune.modeling import resolve_precision
    from llmtune.dist import world_size as launched_world_size

    world = world_size or launched_world_size()
    precision = resolve_precision(cfg.train.precision)
    plan = _pretrain_plan(cfg) if cfg.command == "pretrain" else _finetune_plan(cfg)
    estimates = _estimate(cfg, plan, precision, world)
    _print(cfg, plan, estimates)
    return estimates


def _estimate(cfg: RunConfig, plan: _Plan, precision: str, world: int) -> dict[str, Any]:
    from llmtune.engine.trainer import peak_flops
    from llmtune.modeling import count_parameters, detect_device, estimate_flops_per_token

    t, config = cfg.train, plan.model.config
    total, trainable = count_parameters(plan.model)
    memory = estimate_memory(
        total, trainable, batch=t.batch_size, seq_len=plan.max_tokens, layers=config.num_hidden_layers,
        hidden=config.hidden_size, heads=config.num_attention_heads,
        vocab=config.vocab_size if plan.lm_head else 0, precision=precision, checkpointing=t.gradient_checkpointing)
    device = detect_device()
    peak, source = peak_flops(precision)
    mfu = ASSUMED_MFU["cuda" if device["cuda"] else "cpu"]
    flops = estimate_flops_per_token(plan.model, plan.max_tokens)
    per_epoch = steps_per_epoch(plan.train_count, t.batch_size, t.grad_accum, world)
    free, free_kind = available_memory()
    # CPU processes share one RAM; GPU processes have a device each.
    needed = memory.total * (world if not device["cuda"] else 1)
    return {
        "device": device["name"], "precision": precision, "world_size": world,
        "total_params": total, "trainable_params": trainable, "memory": memory, "memory_needed": needed,
        "memory_available": free, "memory_available_kind": free_kind,
        "steps_per_epoch": per_epoch, "planned_steps": t.max_steps or math.ceil(per_epoch * t.epochs),
        "flops_per_token": flops, "peak_flops": peak, "peak_flops_source": source, "assumed_mfu": mfu,
        "epoch_seconds": epoch_seconds(plan.train_count * plan.mean_tokens, flops, peak, mfu, world),
        "eval_seconds": epoch_seconds(plan.eval_count * plan.mean_tokens, flops / 3, peak, mfu, world),
        "warnings": _warnings(needed, free, free_kind, world, device["cuda"]),
    }


def _warnings(needed: int, free: int, free_kind: str, world: int, cuda: bool) -> list[str]:
    if not free or needed <= free:
        return []
    scope = f"{world} processes x " if world > 1 and not cuda else ""
    return [f"estimated memory {scope}{_gib(needed // (world if scope else 1))} exceeds the {_gib(free)} {free_kind}: "
            "lower --batch-size or train.max_length, or add --gradient-checkpointing (or --lora for finetune)"]


def _pretrain_plan(cfg: RunConfig) -> _Plan:
    """Data, tokenizer and meta model of a pretrain run, as ``runs.pretrain`` would build them."""
    import torch

    from llmtune.data.loading import load_task_data
    from llmtune.modeling import build_config, build_model, dropout_fields
    from llmtune.runs.common import datasets_progress
    from llmtune.tasks import TASK_INFO
    from llmtune.tasks.lm import LanguageModelTask

    if cfg.model.name_or_path:
        raise ConfigError("pretrain builds a model from scratch; drop --model (finetune --task generation continues one)")
    arch = cfg.model.arch or DEFAULT_PRETRAIN_ARCH
    task = LanguageModelTask(arch == "bert", cfg.train.mlm_probability)
    data = load_task_data(cfg.data, TASK_INFO[task.name].columns, seed=cfg.train.seed)
    train, scale, notes = _sample(data.train)
    tokenizer = _pretrain_tokenizer(cfg, train, task.masked)
    config = build_config(arch, cfg.model.size, dict(cfg.model.config), tokenizer, cfg.train.max_length)
    for key, value in dropout_fields(config, cfg.model.dropout).items():
        setattr(config, key, value)
    with torch.device("meta"):
        model = build_model(config, task.name)
    block = cfg.train.max_length
    with datasets_progress(False):
        n_train = round(len(task.preprocess(train, tokenizer, block, desc="packing train")) * scale)
        n_eval = 0
        if data.validation is not None:
            val, val_scale, _ = _sample(data.validation)
            n_eval = round(len(task.preprocess(val, tokenizer, block, desc="packing eval")) * val_scale)
    if n_train == 0:
        notes.append(f"the training text is too short for one block of {block} tokens: the run would refuse it")
    return _Plan(model, f"{arch}-{cfg.model.size} from scratch", n_train, n_eval, f"blocks of {block} tokens",
                 block, block, lm_head=True, notes=[*data.notes, *notes])


def _sample(rows: Any) -> tuple[Any, float, list[str]]:
    """All rows when few; else the first ``_EXACT_ROWS`` and the factor (by characters) to the whole."""
    if len(rows) <= _EXACT_ROWS:
        return rows, 1.0, []
    import pyarrow.compute as pc

    sample = rows.select(range(_EXACT_ROWS))
    # The arrow view honours selections (max_samples, a carved split), unlike the dataset's backing table.
    chars = [pc.sum(pc.utf8_length(d.with_format("arrow")[:]["text"])).as_py() or 0 for d in (rows, sample)]
    note = f"counts extrapolated from the first {_EXACT_ROWS:,} of {len(rows):,} rows (by characters)"
    return sample, chars[0] / max(1, chars[1]), [note]


def _pretrain_tokenizer(cfg: RunConfig, rows: Any, masked: bool) -> Any:
    """``model.tokenizer`` when given, else one trained like the run trains it (on ``rows``)."""
    from llmtune.tokenizer import iter_texts, load_tokenizer, train_tokenizer

    if cfg.model.tokenizer:
        return load_tokenizer(cfg.model.tokenizer, trust_remote_code=cfg.model.trust_remote_code)
    settings = cfg.tokenizer.model_copy(update={"model_max_length": cfg.train.max_length})
    return train_tokenizer(iter_texts(rows), settings, family="masked" if masked else "causal")


def _finetune_plan(cfg: RunConfig) -> _Plan:
    """Data, tokenizer, features and meta model of a finetune run, from ``runs.finetune``'s own steps."""
    from llmtune.data.loading import load_task_data
    from llmtune.modeling import load_pretrained, resolve_model_path
    from llmtune.runs import finetune as ft
    from llmtune.runs.common import PROGRESS_ROWS, datasets_progress

    task = ft.make_task(cfg)
    if not cfg.model.name_or_path:
        raise ConfigError("finetune starts from a pretrained model; pass --model HUB_ID, a model folder or a run dir")
    model_path = resolve_model_path(cfg.model.name_or_path)
    data = load_task_data(cfg.data, task.columns, seed=cfg.train.seed)
    config = load_pretrained(model_path, "AutoConfig", trust_remote_code=cfg.model.trust_remote_code)
    tokenizer = ft.model_tokenizer(cfg, model_path)
    task.check_tokenizer(tokenizer)
    max_length = ft.capped_max_length(cfg.train.max_length, config, tokenizer)
    with datasets_progress(len(data.train) >= PROGRESS_ROWS):
        features = task.prepare(data, tokenizer, max_length)
    ft.check_head_size(cfg, config, task.model_kwargs())
    model = _meta_finetune_model(cfg, task, model_path, config)
    lengths = features.train["length"]
    n_eval = len(features.eval) if features.eval is not None else 0
    return _Plan(model, f"{cfg.model.name_or_path} ({type(model).__name__})", len(features.train), n_eval,
                 "examples" if task.name != "qa" else "windows", sum(lengths) / max(1, len(lengths)),
                 max(lengths, default=max_length), lm_head=task.name == "generation",
                 notes=[*data.notes, *features.notes])


def _meta_finetune_model(cfg: RunConfig, task: Any, model_path: str, config: Any) -> Any:
    """The task model on the meta device, with the run's freezing and LoRA applied."""
    import torch
    import transformers

    from llmtune.modeling import dropout_fields, load_pretrained
    from llmtune.runs import finetune as ft

    kwargs = {**dropout_fields(config, cfg.model.dropout), **dict(cfg.model.config), **task.model_kwargs()}
    config = load_pretrained(model_path, "AutoConfig", trust_remote_code=cfg.model.trust_remote_code, **kwargs)
    with torch.device("meta"):
        model = getattr(transformers, task.auto_class).from_config(config, trust_remote_code=cfg.model.trust_remote_code)
        if cfg.train.freeze_embeddings and not cfg.lora.enabled:
            ft.freeze_input_embeddings(model)
        if cfg.train.freeze_layers and not cfg.lora.enabled:
            ft.freeze_lower_layers(model, cfg.train.freeze_layers)
        if cfg.lora.enabled:
            model = ft.apply_lora(cfg, model, _new_modules(model, model_path), task.auto_class)
    return model


def _new_modules(model: Any, model_path: str) -> list[str]:
    """Modules of ``model`` with weights the checkpoint lacks (trained from scratch), read from file headers only."""
    import json
    from pathlib import Path

    from safetensors import safe_open

    folder = Path(model_path)
    index, single = folder / "model.safetensors.index.json", folder / "model.safetensors"
    if index.is_file():
        saved = set(json.loads(index.read_text())["weight_map"])
    elif single.is_file():
        with safe_open(str(single), "pt") as handle:
            saved = set(handle.keys())
    else:
        return []  # a hub id or pickled weights: the task head alone is trained in full
    prefix = f"{model.base_model_prefix}."
    expected = [name for name, _ in model.named_parameters()]  # a tied weight once, under its saved name
    missing = [k for k in expected if k not in saved and k.removeprefix(prefix) not in saved]
    return sorted({key.rsplit(".", 1)[0] for key in missing})


def _print(cfg: RunConfig, plan: _Plan, e: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from llmtune.modeling import format_params
    from llmtune.dist import log

    t, m = cfg.train, e["memory"]
    table = Table(title=f"llmtune {cfg.command} --dry-run (nothing trained, no run dir written)", show_header=False)
    rows = [
        ("device", f"{e['device']}, {e['precision']}, {e['world_size']} process(es)"),
        ("model", f"{plan.model_name}: {format_params(e['total_params'])} parameters, "
                  f"{format_params(e['trainable_params'])} trainable"),
        ("data", f"{plan.train_count:,} training {plan.unit}, {plan.eval_count:,} evaluation"),
        ("tokens per row", f"mean {plan.mean_tokens:,.0f}, max {plan.max_tokens:,}"),
        ("memory per process", f"~{_gib(m.total)}: weights {_gib(m.weights)} + gradients {_gib(m.gradients)} + "
                               f"AdamW {_gib(m.optimizer)} + activations {_gib(m.activations)} "
                               f"(batch {t.batch_size} x {plan.max_tokens} tokens)"),
        ("memory available", f"{_gib(e['memory_available'])} {e['memory_available_kind']}"),
        ("steps per epoch", f"{e['steps_per_epoch']:,} (global batch {t.batch_size * t.grad_accum * e['world_size']})"),
        ("planned steps", f"{e['planned_steps']:,}" + (f" (time budget {t.time_budget})" if t.time_budget else "")),
        ("time per epoch", f"~{_duration(e['epoch_seconds'])} training + ~{_duration(e['eval_seconds'])} per "
                           f"evaluation ({e['flops_per_token']:.3g} FLOPs/token at {100 * e['assumed_mfu']:.0f} % "
                           f"of {e['peak_flops'] / 1e9:,.0f} GFLOP/s, {e['peak_flops_source']})"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)
    for note in plan.notes:
        log(note)
    for warning in e["warnings"]:
        log(f"warning: {warning}")


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
