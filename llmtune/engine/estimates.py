"""What a training run will cost, before it runs and while it runs: memory, steps, time, FLOPs utilisation.

``--dry-run`` (each training runner's ``dry_run``) builds its model on the meta device with the
runner's own preparation, describes it as a ``Plan`` and hands it to ``report_plan``, which prints
the estimates below. During training, ``mfu_metrics`` turns measured tokens/s into model FLOPs
utilisation against ``peak_flops``.

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

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from llmtune.config.schema import RunConfig
from llmtune.dist import log
from llmtune.dist import world_size as launched_world_size

# Share of the peak a real training step reaches: llmtune's tiny pretrain measures ~60 % of the fp32
# GEMM peak on CPU (bench/pretrain_throughput); small models reach far less of a GPU's datasheet peak.
ASSUMED_MFU = {"cpu": 0.5, "cuda": 0.3}


@dataclass
class Plan:
    """What a dry run found: the model (on the meta device), its data and its shapes."""

    model: Any
    model_name: str
    train_count: int
    eval_count: int
    unit: str
    mean_tokens: float
    max_tokens: int
    lm_head: bool
    notes: list[str] = field(default_factory=list)


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


def _estimate(cfg: RunConfig, plan: Plan, precision: str, world: int) -> dict[str, Any]:
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


def _print(cfg: RunConfig, plan: Plan, e: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from llmtune.modeling import format_params

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


# Dense (no 2:4 sparsity) bf16/fp16 tensor-core peaks per GPU from NVIDIA's datasheets, in FLOP/s.
# Matched as substrings of the CUDA device name, most specific first ("A100" before "A10").
GPU_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("B200", 2250e12),
    ("A100", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("A10", 125e12), ("V100", 125e12),
    ("T4", 65e12),
)


def peak_flops(precision: str) -> tuple[float, str]:
    """Peak FLOP/s of one device, the denominator of MFU.

    Known GPUs training in bf16/fp16 use the datasheet figure. Anything else (CPUs, fp32, unknown
    GPUs) uses a measured square GEMM in the training precision, which is what the hardware delivers
    to a perfect matmul here; MFU against it reads as "fraction of achievable matmul speed".

    Args:
        precision: The resolved training precision (``fp32``, ``bf16``, ``fp16``).

    Returns:
        ``(flops_per_second, source)`` where ``source`` says where the figure came from.
    """
    import torch

    if not torch.cuda.is_available():
        return measure_gemm_flops("cpu", "fp32"), "measured fp32 GEMM on cpu"
    name = torch.cuda.get_device_name()
    if precision in ("bf16", "fp16"):
        for key, flops in GPU_PEAK_FLOPS:
            if key in name:
                return flops, f"{name} datasheet ({precision} dense)"
    return measure_gemm_flops("cuda", precision), f"measured {precision} GEMM on {name}"


@functools.lru_cache(maxsize=None)
def measure_gemm_flops(device: str, precision: str = "fp32", seconds: float = 0.5) -> float:
    """FLOP/s of repeated square matrix products on ``device`` for about ``seconds`` (cached per process)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    n = 4096 if device == "cuda" else 1024
    # A private generator: drawing from the global one would shift the training random stream.
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.rand(n, n, generator=gen).to(device=device, dtype=dtype) for _ in range(2))

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    a @ b  # warm-up: kernel selection, thread pool start
    sync()
    count, start, elapsed = 0, time.perf_counter(), 0.0
    while elapsed < seconds:
        for _ in range(8 if device == "cuda" else 1):
            a @ b
            count += 1
        sync()
        elapsed = time.perf_counter() - start
    return 2 * n**3 * count / elapsed


def mfu_metrics(tokens_per_second: Optional[float], flops_per_token: float, precision: str,
                world_size: int = 1) -> dict[str, Any]:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak of all devices.

    Args:
        tokens_per_second: Training tokens per second over all processes (None: unknown).
        flops_per_token: Training FLOPs per token (``modeling.estimate_flops_per_token``).
        precision: The resolved training precision.
        world_size: Number of processes (one device each).

    Returns:
        ``model_flops_per_second``, ``peak_flops`` (one device), ``peak_flops_source`` and ``mfu`` (a
        fraction; None when throughput is unknown).
    """
    peak, source = peak_flops(precision)
    achieved = tokens_per_second * flops_per_token if tokens_per_second else None
    return {
        "model_flops_per_second": achieved,
        "peak_flops": peak,
        "peak_flops_source": source,
        "mfu": achieved / (peak * max(1, world_size)) if achieved else None,
    }


def report_plan(cfg: RunConfig, plan: Plan, world_size: Optional[int] = None) -> dict[str, Any]:
    """Print the estimates for ``plan`` (a table on stdout, notes and warnings on stderr) and return them.

    Args:
        cfg: The resolved config of the run the plan is for.
        plan: What the runner's preparation built.
        world_size: Processes the run would use (default: ``WORLD_SIZE`` or 1).
    """
    from llmtune.modeling import resolve_precision

    world = world_size or launched_world_size()
    estimates = _estimate(cfg, plan, resolve_precision(cfg.train.precision), world)
    _print(cfg, plan, estimates)
    return estimates
