"""``llmtune pretrain``: data -> tokenizer -> model from scratch -> packed blocks -> Trainer -> run dir."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

from llmtune.config.schema import RunConfig
from llmtune.errors import ConfigError, DataError
from llmtune.runs.common import RunResult, finish_run, log, start_run

TEXT_COLUMNS = ("text",)
_EVAL_RESERVE = 1.15  # keep ~15 % of the remaining budget for evaluation and saving


def run(cfg: RunConfig) -> RunResult:
    """Pre-train a model from scratch as ``cfg`` says and return where everything went."""
    import torch

    from llmtune.data.loading import load_task_data
    from llmtune.tasks import TASK_INFO
    from llmtune.tasks.lm import LanguageModelTask

    started = time.monotonic()
    arch = cfg.model.arch or "gpt2"
    task = LanguageModelTask(masked=arch == "bert")
    cfg = cfg.model_copy(update={"task": task.name, "model": cfg.model.model_copy(update={"arch": arch})})
    run_dir = start_run(cfg, default_name=f"pretrain-{arch}-{cfg.model.size}")
    data = load_task_data(cfg.data, TASK_INFO[task.name].columns, seed=cfg.train.seed)
    for note in data.notes:
        log(note)
    tokenizer = _tokenizer(cfg, data, masked=task.masked, run_dir=run_dir)
    torch.manual_seed(cfg.train.seed)
    model = _model(cfg, arch, task.name, tokenizer)
    train_blocks, eval_blocks = _pack(task, data, tokenizer, cfg.train.max_length)
    units = _units(eval_blocks if eval_blocks is not None else train_blocks, cfg.train.max_length, task.masked)
    budget_left = _budget_left(cfg, started)
    return _train(cfg, run_dir, model, tokenizer, task, train_blocks, eval_blocks, units, budget_left, started)


def _tokenizer(cfg: RunConfig, data: Any, *, masked: bool, run_dir: Path) -> Any:
    from llmtune.tokenizer import iter_texts, load_tokenizer, train_and_report

    if cfg.model.tokenizer:
        tok = load_tokenizer(cfg.model.tokenizer, trust_remote_code=cfg.model.trust_remote_code)
        log(f"tokenizer: {cfg.model.tokenizer} (vocab {len(tok)})")
        return tok
    tok_cfg = cfg.tokenizer
    heldout = _sample_texts(data.validation if data.validation is not None else data.train, 200)
    tok, report = train_and_report(
        iter_texts(data.train), tok_cfg.model_copy(update={"model_max_length": cfg.train.max_length}),
        family="masked" if masked else "causal", heldout=heldout,
    )
    tok.save_pretrained(str(run_dir))
    log(
        f"tokenizer: trained {report.type} vocab {report.vocab_size} in {report.train_seconds:.1f}s; "
        f"held-out {report.heldout.get('chars_per_token', float('nan')):.2f} chars/token, "
        f"{report.heldout.get('bytes_per_token', float('nan')):.2f} bytes/token"
    )
    return tok


def _sample_texts(dataset: Any, n: int) -> list[str]:
    return [t for t in dataset.select(range(min(n, len(dataset))))["text"] if t and t.strip()]


def _model(cfg: RunConfig, arch: str, task_name: str, tokenizer: Any) -> Any:
    from llmtune.modeling import build_config, build_model, count_parameters, format_params

    if cfg.model.name_or_path:
        raise ConfigError("pretrain continues from an existing model in a later release; use finetune --task generation")
    config = build_config(arch, cfg.model.size, dict(cfg.model.config), tokenizer, cfg.train.max_length)
    model = build_model(config, task_name)
    total, trainable = count_parameters(model)
    log(f"model: {arch}-{cfg.model.size} from scratch, {format_params(total)} parameters ({format_params(trainable)} trainable)")
    return model


def _pack(task: Any, data: Any, tokenizer: Any, block_size: int) -> tuple[Any, Optional[Any]]:
    train_blocks = task.preprocess(data.train, tokenizer, block_size, desc="packing train")
    if len(train_blocks) == 0:
        raise DataError(
            f"the training text is too short for one block of {block_size} tokens; "
            f"add text or lower --set train.max_length"
        )
    eval_blocks = None
    if data.validation is not None:
        eval_blocks = task.preprocess(data.validation, tokenizer, block_size, desc="packing eval")
        if len(eval_blocks) == 0:
            log(f"evaluation text is shorter than one block of {block_size} tokens: evaluating on training blocks")
            eval_blocks = train_blocks.select(range(min(len(train_blocks), 8)))
    log(f"data: {len(train_blocks)} training blocks, {len(eval_blocks) if eval_blocks is not None else 0} evaluation blocks of {block_size} tokens")
    return train_blocks, eval_blocks


def _units(blocks: Any, block_size: int, masked: bool) -> dict[str, float]:
    from llmtune.tasks.lm import text_units_per_token

    return text_units_per_token(blocks, block_size, masked=masked)


def _budget_left(cfg: RunConfig, started: float) -> Optional[float]:
    """Seconds left for training: the budget counts from the start of the run (tokenizer included)."""
    budget = cfg.train.time_budget_seconds
    if budget is None:
        return None
    left = budget - (time.monotonic() - started)
    if left <= 0:
        raise ConfigError(
            f"time budget {cfg.train.time_budget} was spent before training began (data and tokenizer took "
            f"{time.monotonic() - started:.0f}s); give a larger --time-budget or pass --tokenizer DIR"
        )
    return left


def _steps_for_budget(cfg: RunConfig, model: Any, collate: Any, blocks: Any, seconds: float) -> int:
    """Time two forward+backward passes and fit the step count (and so the LR schedule) to the budget."""
    from llmtune.engine.callbacks import check_budget_fits

    batch = collate([blocks[i] for i in range(min(cfg.train.batch_size, len(blocks)))])
    model.train()
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        model(**batch).loss.backward()
        timings.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    step_seconds = min(timings) * cfg.train.grad_accum * 1.1  # + optimizer step and data loading
    check_budget_fits(seconds, step_seconds)
    return max(1, math.floor(seconds / _EVAL_RESERVE / step_seconds))


def _train(
    cfg: RunConfig, run_dir: Path, model: Any, tokenizer: Any, task: Any, train_blocks: Any,
    eval_blocks: Any, units: dict[str, float], budget_left: Optional[float], started: float,
) -> RunResult:
    from llmtune.engine.trainer import EngineInputs, build_trainer, resume_checkpoint
    from llmtune.modeling import estimate_flops_per_token, resolve_precision
    from llmtune.tasks.lm import lm_eval_metrics

    collate = task.collator(tokenizer)
    steps_per_epoch = math.ceil(len(train_blocks) / (cfg.train.batch_size * cfg.train.grad_accum))
    planned = cfg.train.max_steps or math.ceil(steps_per_epoch * cfg.train.epochs)
    if budget_left is not None:
        fit = _steps_for_budget(cfg, model, collate, train_blocks, budget_left)
        if fit < planned:
            log(f"time budget: ~{fit} of {planned} planned steps fit; the schedule decays over {fit} steps")
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": fit})})
        budget_left = _budget_left(cfg, started)
    tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * cfg.train.max_length
    inputs = EngineInputs(model, tokenizer, train_blocks, eval_blocks, collate, tokens_per_step=tokens_per_step)
    trainer, throughput = build_trainer(
        cfg, inputs, run_dir, precision=resolve_precision(cfg.train.precision), time_budget_s=budget_left,
        derive_metrics=lambda m, p: _prefixed(lm_eval_metrics(m[f"{p}_loss"], units), p) if not task.masked else {},
    )
    train_out = trainer.train(resume_from_checkpoint=resume_checkpoint(cfg, run_dir))
    metrics = dict(train_out.metrics)
    if eval_blocks is not None:
        metrics.update(trainer.evaluate())
    trainer.save_model(str(run_dir))
    tokenizer.save_pretrained(str(run_dir))
    summary = throughput.summary()
    flops = estimate_flops_per_token(model, cfg.train.max_length)
    metrics.update(summary, flops_per_token=flops, wall_seconds=time.monotonic() - started)
    metrics["mfu_flops_per_second"] = (summary.get("train_tokens_per_second") or 0.0) * flops
    return finish_run(cfg, run_dir, metrics)


def _prefixed(values: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in values.items()}
