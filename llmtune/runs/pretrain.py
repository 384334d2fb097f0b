"""``llmtune pretrain``: data -> tokenizer -> model from scratch -> packed blocks -> Trainer -> run dir.

``run`` first prepares everything that can fail on bad input (data, tokenizer, model config, packing,
the time budget), then trains, evaluates, saves and reports. A run that fails on bad input before its
first training step removes the run dir it created, so the corrected command can simply be rerun.
``dry_run`` (``--dry-run``) goes through the same steps with the model on the meta device and, for big
data, packs a sample and extrapolates.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from llmtune.config.schema import DEFAULT_PRETRAIN_ARCH, RunConfig
from llmtune.errors import ConfigError, DataError
from llmtune.data.sources import PROGRESS_ROWS, datasets_progress
from llmtune.runs.common import RunResult, finish_run, is_fresh, removed_on_bad_input, start_run
from llmtune.dist import is_main_process, log, main_process_first, world_size

_PARALLEL_ROWS = 50_000  # pack this many rows or more in several processes
_MAX_PACK_PROCS = 8
_EXACT_ROWS = 20_000  # dry run: pack every row up to this many; beyond, pack a sample and extrapolate


@dataclass
class _Prepared:
    """Everything training needs, checked before the first step."""

    cfg: RunConfig
    task: Any
    tokenizer: Any
    model: Any
    train_blocks: Any
    eval_blocks: Any
    units: dict[str, float]
    precision: str
    checkpoint: Optional[str]
    budget_left: Optional[float]
    budget_callbacks: list[Any]


def run(cfg: RunConfig) -> RunResult:
    """Pre-train a model from scratch as ``cfg`` says and return where everything went."""
    from llmtune.engine.trainer import resume_checkpoint

    started = time.monotonic()
    task, arch = _task(cfg)
    default_dir = Path("runs") / f"pretrain-{arch}-{cfg.model.size}"
    output_dir = Path(cfg.train.output_dir or default_dir).expanduser()
    cfg = cfg.model_copy(update={
        "task": task.name,
        "model": cfg.model.model_copy(update={"arch": arch}),
        "train": cfg.train.model_copy(update={"output_dir": str(output_dir)}),
    })
    fresh = is_fresh(cfg, output_dir)
    run_dir = start_run(cfg, default_name=default_dir.name)
    with removed_on_bad_input(run_dir, fresh):
        prepared = _prepare(cfg, task, arch, run_dir, resume_checkpoint(cfg, run_dir), started)
    return _train(prepared, run_dir, started)


def dry_run(cfg: RunConfig, world_size: Optional[int] = None) -> dict[str, Any]:
    """``--dry-run``: data, tokenizer and packing as ``run`` does them, the model on the meta device, then
    the memory, steps and time estimates (``engine.estimates``); nothing is trained, no run dir written."""
    import torch

    from llmtune.data.loading import load_task_data
    from llmtune.engine.estimates import Plan, report_plan
    from llmtune.tasks.registry import TASKS

    task, arch = _task(cfg)
    data = load_task_data(cfg.data, TASKS[task.name].columns, seed=cfg.train.seed)
    train, scale, notes = _sample(data.train)
    tokenizer = _tokenizer(cfg, dataclasses.replace(data, train=train), masked=task.masked, run_dir=None)
    with torch.device("meta"):
        model = _model(cfg, arch, task, tokenizer)
    block = cfg.train.max_length
    with datasets_progress(False):
        n_train = round(len(task.preprocess(train, tokenizer, block, desc="packing train")) * scale)
        n_eval = 0
        if data.validation is not None:
            val, val_scale, _ = _sample(data.validation)
            n_eval = round(len(task.preprocess(val, tokenizer, block, desc="packing eval")) * val_scale)
    if n_train == 0:
        notes.append(f"the training text is too short for one block of {block} tokens: the run would refuse it")
    plan = Plan(model, f"{arch}-{cfg.model.size} from scratch", n_train, n_eval, f"blocks of {block} tokens",
                block, block, lm_head=True, notes=[*data.notes, *notes])
    return report_plan(cfg, plan, world_size)


def _task(cfg: RunConfig) -> tuple[Any, str]:
    """The language-model task and the architecture to build."""
    from llmtune.tasks.lm import LanguageModelTask

    if cfg.model.name_or_path:
        raise ConfigError(
            "pretrain continues from an existing model in a later release; use finetune --task generation"
        )
    arch = cfg.model.arch or DEFAULT_PRETRAIN_ARCH
    return LanguageModelTask(arch == "bert", cfg.train.mlm_probability), arch


def _prepare(
    cfg: RunConfig, task: Any, arch: str, run_dir: Path, checkpoint: Optional[str], started: float
) -> _Prepared:
    import torch

    from llmtune.data.loading import load_task_data
    from llmtune.engine.reliability import check_disk_space
    from llmtune.modeling import count_parameters, resolve_precision
    from llmtune.tasks.registry import TASKS

    precision = resolve_precision(cfg.train.precision)
    data = load_task_data(cfg.data, TASKS[task.name].columns, seed=cfg.train.seed)
    for note in data.notes:
        log(note)
    with main_process_first():  # rank 0 trains the tokenizer and packs; the others load both
        tokenizer = _tokenizer(cfg, data, masked=task.masked, run_dir=run_dir)
        train_blocks, eval_blocks = _pack(task, data, tokenizer, cfg.train.max_length)
    torch.manual_seed(cfg.train.seed)
    model = _model(cfg, arch, task, tokenizer)
    if is_main_process():
        check_disk_space(run_dir, *count_parameters(model))
    units = _units(eval_blocks if eval_blocks is not None else train_blocks, cfg.train.max_length, task.masked)
    n_eval = len(eval_blocks) if eval_blocks is not None else 0
    cfg, budget_left, budget_callbacks = _fit_budget(
        cfg, model, task.collator(tokenizer), train_blocks, n_eval, precision, started, checkpoint
    )
    return _Prepared(cfg, task, tokenizer, model, train_blocks, eval_blocks, units, precision, checkpoint, budget_left,
                     budget_callbacks)


def _tokenizer(cfg: RunConfig, data: Any, *, masked: bool, run_dir: Optional[Path]) -> Any:
    """``model.tokenizer``, the run's own (resume, other ranks), or one trained on the data (saved in ``run_dir``)."""
    from llmtune.tokenizer import iter_texts, load_tokenizer, train_and_report

    if cfg.model.tokenizer:
        tok = load_tokenizer(cfg.model.tokenizer, trust_remote_code=cfg.model.trust_remote_code)
        log(f"tokenizer: {cfg.model.tokenizer} (vocab {len(tok)})")
        return tok
    saved = run_dir is not None and (run_dir / "tokenizer.json").is_file()
    if not is_main_process() and saved:
        return load_tokenizer(str(run_dir))  # rank 0 trained and saved it (main_process_first)
    if cfg.train.resume and saved:
        # The checkpoint's embeddings index this vocabulary: never retrain it, even if the data changed.
        tok = load_tokenizer(str(run_dir))
        log(f"tokenizer: the run's own (vocab {len(tok)}), as the checkpoint was trained with it")
        return tok
    heldout = _sample_texts(data.validation if data.validation is not None else data.train, 200)
    tok, report = train_and_report(
        iter_texts(data.train), cfg.tokenizer.model_copy(update={"model_max_length": cfg.train.max_length}),
        family="masked" if masked else "causal", heldout=heldout,
    )
    if is_main_process() and run_dir is not None:
        tok.save_pretrained(str(run_dir))
    log(
        f"tokenizer: trained {report.type} vocab {report.vocab_size} in {report.train_seconds:.1f}s; "
        f"held-out {report.heldout.get('chars_per_token', float('nan')):.2f} chars/token, "
        f"{report.heldout.get('bytes_per_token', float('nan')):.2f} bytes/token"
    )
    return tok


def _sample_texts(dataset: Any, n: int) -> list[str]:
    return [t for t in dataset.select(range(min(n, len(dataset))))["text"] if t and t.strip()]


def _model(cfg: RunConfig, arch: str, task: Any, tokenizer: Any) -> Any:
    from llmtune.modeling import build_config, build_model, count_parameters, dropout_fields, format_params

    config = build_config(arch, cfg.model.size, dict(cfg.model.config), tokenizer, cfg.train.max_length)
    for key, value in dropout_fields(config, cfg.model.dropout).items():
        if key not in cfg.model.config:  # an explicit model.config field wins
            setattr(config, key, value)
    model = build_model(config, task.name)
    if getattr(model, "loss_type", "") is None:
        # GPT2LMHeadModel's class name hides its loss type; transformers then warns on every run.
        model.loss_type = "ForMaskedLM" if task.masked else "ForCausalLM"
    total, trainable = count_parameters(model)
    log(f"model: {arch}-{cfg.model.size} from scratch, {format_params(total)} parameters "
        f"({format_params(trainable)} trainable)")
    return model


def _pack(task: Any, data: Any, tokenizer: Any, block_size: int) -> tuple[Any, Optional[Any]]:
    train_blocks, cached = _pack_split(task, data.train, tokenizer, block_size, "train")
    if len(train_blocks) == 0:
        raise DataError(
            f"the training text is too short for one block of {block_size} tokens; "
            f"add text or lower --set train.max_length"
        )
    eval_blocks = None
    if data.validation is not None:
        eval_blocks, eval_cached = _pack_split(task, data.validation, tokenizer, block_size, "eval")
        cached = None if cached is None or eval_cached is None else cached and eval_cached
        if len(eval_blocks) == 0:
            log(f"evaluation text is shorter than one block of {block_size} tokens: evaluating on training blocks")
            eval_blocks = train_blocks.select(range(min(len(train_blocks), 8)))
    how = {True: " (loaded from the datasets cache: not tokenized again)",
           False: " (tokenized; cached for reruns with the same data and tokenizer)"}.get(cached, "")
    n_eval = len(eval_blocks) if eval_blocks is not None else 0
    log(f"data: {len(train_blocks)} training blocks, {n_eval} evaluation blocks of {block_size} tokens{how}")
    return train_blocks, eval_blocks


def _pack_split(task: Any, rows: Any, tokenizer: Any, block_size: int, name: str) -> tuple[Any, Optional[bool]]:
    """Pack one split; also say whether it came from the datasets cache (None: not cacheable)."""
    num_proc = min(_MAX_PACK_PROCS, os.cpu_count() or 1) if len(rows) >= _PARALLEL_ROWS else None
    if num_proc and num_proc > 1:
        # Forked workers would otherwise each warn that the tokenizer's own threads were disabled.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    began = time.time()
    with datasets_progress(len(rows) >= PROGRESS_ROWS):
        blocks = task.preprocess(rows, tokenizer, block_size, desc=f"packing {name}", num_proc=num_proc)
    # A cache hit returns files written by an earlier run; a miss writes them now.
    files = [entry["filename"] for entry in blocks.cache_files]
    return blocks, (all(os.path.getmtime(f) < began for f in files) if files else None)


def _units(blocks: Any, block_size: int, masked: bool) -> dict[str, float]:
    from llmtune.tasks.lm import text_units_per_token

    return text_units_per_token(blocks, block_size, masked=masked)




def _fit_budget(
    cfg: RunConfig, model: Any, collate: Any, blocks: Any, n_eval_blocks: int, precision: str, started: float,
    checkpoint: Optional[str],
) -> tuple[RunConfig, Optional[float], list[Any]]:
    """Fit the step count and LR schedule to the time budget (``engine.budget.fit_to_budget``).

    The first estimate comes from two timed passes; the refit from the first real steps. Returns the
    config (``max_steps`` lowered when fewer steps fit), the seconds left for training and the callbacks.

    Raises:
        ConfigError: Not even one step fits (``check_budget_fits``).
    """
    from llmtune.engine.budget import finish_seconds, fit_to_budget, steps_done

    t = cfg.train
    if t.time_budget_seconds is None:
        return cfg, None, []
    pass_seconds = _time_pass(t.batch_size, model, collate, blocks, precision)
    fit = fit_to_budget(cfg, started, n_rows=len(blocks), n_eval_rows=n_eval_blocks, done=steps_done(checkpoint),
                        pass_seconds=pass_seconds, reserve_seconds=finish_seconds(model))
    return fit.cfg, fit.seconds_left, fit.callbacks


def _time_pass(batch_size: int, model: Any, collate: Any, blocks: Any, precision: str) -> float:
    """Seconds for one forward+backward pass of a micro-batch on the training device (faster of two)."""
    import torch

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if on_gpu else torch.device("cpu")
    model.to(device)  # timing on the CPU would wildly overestimate a GPU step
    features = [blocks[i] for i in range(min(batch_size, len(blocks)))]
    batch = {k: v.to(device) for k, v in collate(features).items()}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    model.train()
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(**batch).loss
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return min(timings)


def _train(p: _Prepared, run_dir: Path, started: float) -> RunResult:
    from llmtune.engine.trainer import EngineInputs, build_trainer, final_evaluate

    cfg = p.cfg
    tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * cfg.train.max_length * world_size()
    inputs = EngineInputs(p.model, p.tokenizer, p.train_blocks, p.eval_blocks, p.task.collator(p.tokenizer),
                          tokens_per_step=tokens_per_step,
                          callbacks=[*_sample_callbacks(p, run_dir), *p.budget_callbacks])
    trainer, throughput = build_trainer(
        cfg, inputs, run_dir, precision=p.precision, time_budget_s=p.budget_left,
        derive_metrics=None if p.task.masked else _text_metrics(p.units),
    )
    train_out = trainer.train(resume_from_checkpoint=p.checkpoint)
    metrics = dict(train_out.metrics)
    if p.eval_blocks is not None:
        metrics.update(final_evaluate(trainer))
    trainer.save_model(str(run_dir))  # weights, config and tokenizer (the Trainer's processing_class)
    metrics.update(_throughput(throughput.summary(), p.model, cfg.train.max_length, p.precision))
    metrics["wall_seconds"] = time.monotonic() - started
    return finish_run(cfg, run_dir, metrics)


def _sample_callbacks(p: _Prepared, run_dir: Path) -> list[Any]:
    """A sample generation at each evaluation, for causal LMs: prompt = opening of the evaluation text."""
    from llmtune.engine.samples import SAMPLES_FILE, SampleCallback, sample_prompt

    if p.task.masked or p.eval_blocks is None or len(p.eval_blocks) == 0:
        return []
    prompt = sample_prompt(p.eval_blocks[0]["input_ids"], p.tokenizer)
    return [SampleCallback(p.tokenizer, prompt, run_dir / SAMPLES_FILE)]


def _throughput(summary: dict[str, Any], model: Any, seq_len: int, precision: str) -> dict[str, Any]:
    """Tokens/s, peak memory and MFU for metrics.json, with one line for the user."""
    from llmtune.engine.estimates import mfu_metrics
    from llmtune.modeling import estimate_flops_per_token

    flops = estimate_flops_per_token(model, seq_len)
    out = {**summary, "flops_per_token": flops,
           **mfu_metrics(summary.get("train_steady_tokens_per_second"), flops, precision, world_size())}
    parts = []
    if out.get("train_steady_tokens_per_second"):
        parts.append(f"{out['train_steady_tokens_per_second']:,.0f} tok/s")
    if out.get("mfu") is not None:
        peak = f"{_flops(out['peak_flops'])} per device ({out['peak_flops_source']})"
        parts.append(f"MFU {100 * out['mfu']:.1f} % of {peak}")
    if out.get("peak_memory_bytes"):
        parts.append(f"peak memory {out['peak_memory_bytes'] / 2**30:.2f} GiB ({out['peak_memory_kind']})")
    if parts:
        log("throughput: " + ", ".join(parts))
    return out


def _flops(value: float) -> str:
    return f"{value / 1e12:,.1f} TFLOP/s" if value >= 1e12 else f"{value / 1e9:,.1f} GFLOP/s"


def _text_metrics(units: dict[str, float]) -> Callable[[dict[str, float], str], dict[str, float]]:
    """Perplexity and bits per token/char/byte from each evaluation's loss (causal LMs)."""
    from llmtune.tasks.lm import lm_eval_metrics

    def derive(metrics: dict[str, float], prefix: str) -> dict[str, float]:
        return {f"{prefix}_{k}": v for k, v in lm_eval_metrics(metrics[f"{prefix}_loss"], units).items()}

    return derive


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
