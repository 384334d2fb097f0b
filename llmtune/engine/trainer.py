"""The one training engine: a ``transformers.Trainer`` configured from a ``RunConfig``.

Runners hand over a model, tokenizer, datasets and a task's collator/metrics; this module turns the
config into ``TrainingArguments`` and wires llmtune's callbacks. Nothing task-specific lives here.
Because Trainer runs on Accelerate, ``accelerate launch -m llmtune ...`` gives multi-process for free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from llmtune.config.schema import RunConfig


@dataclass
class EngineInputs:
    """What a runner gives the engine.

    Attributes:
        model: The (possibly peft-wrapped) model to train.
        tokenizer: Saved with the model (``processing_class``).
        train_dataset: Preprocessed training features.
        eval_dataset: Preprocessed evaluation features, or None.
        collator: Batches a list of features.
        compute_metrics: Task metrics from ``EvalPrediction`` (None: loss only).
        preprocess_logits: Shrinks logits before they are gathered (e.g. argmax), saving memory.
        tokens_per_step: Tokens in one optimizer step (for tokens/s), if known.
        callbacks: Extra callbacks from the runner.
    """

    model: Any
    tokenizer: Any
    train_dataset: Any
    eval_dataset: Any = None
    collator: Optional[Callable[..., Any]] = None
    compute_metrics: Optional[Callable[..., dict[str, float]]] = None
    preprocess_logits: Optional[Callable[..., Any]] = None
    tokens_per_step: Optional[int] = None
    callbacks: list[Any] = field(default_factory=list)


def training_arguments(cfg: RunConfig, output_dir: Path, *, has_eval: bool, precision: str = "fp32") -> Any:
    """Map ``cfg.train`` onto ``transformers.TrainingArguments``.

    Args:
        cfg: The resolved run config.
        output_dir: Run directory (checkpoints go to ``output_dir/checkpoint-N``).
        has_eval: Whether there is evaluation data (else no evaluation strategy).
        precision: Resolved precision (``fp32``, ``bf16`` or ``fp16``), never ``auto``.

    Returns:
        The TrainingArguments.
    """
    import torch
    from transformers import TrainingArguments

    t = cfg.train
    on_gpu = torch.cuda.is_available()
    eval_strategy = ("steps" if t.eval_steps else "epoch") if has_eval else "no"
    save_strategy = "steps" if (t.save_steps or t.eval_steps) else "epoch"
    best_model = bool(has_eval and t.early_stopping_patience)
    if best_model and save_strategy != eval_strategy:
        save_strategy = eval_strategy  # load_best_model_at_end needs matching strategies
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_fraction if t.warmup_fraction else t.warmup_steps,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps,
        save_strategy=save_strategy,
        save_steps=t.save_steps or t.eval_steps or 500,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=best_model,
        metric_for_best_model=(t.metric_for_best_model or "eval_loss") if best_model else None,
        greater_is_better=None,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not on_gpu,
        dataloader_pin_memory=on_gpu,
        gradient_checkpointing=t.gradient_checkpointing,
        ddp_find_unused_parameters=False,
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        save_only_model=False,
    )


def build_trainer(
    cfg: RunConfig,
    inputs: EngineInputs,
    run_dir: Path,
    *,
    precision: str = "fp32",
    time_budget_s: Optional[float] = None,
    derive_metrics: Optional[Callable[[dict[str, float], str], dict[str, float]]] = None,
) -> tuple[Any, Any]:
    """Build the Trainer with llmtune's callbacks.

    Args:
        cfg: The resolved run config.
        inputs: Model, data, collator and metrics from the runner.
        run_dir: Where checkpoints and ``logs/metrics.jsonl`` go.
        precision: Resolved precision.
        time_budget_s: Seconds left for training (None: no budget).
        derive_metrics: ``f(metrics, prefix) -> extra metrics`` applied after every evaluation, before
            the metrics are logged (e.g. perplexity and bits per character from the loss).

    Returns:
        ``(trainer, throughput)`` where ``throughput.summary()`` gives tokens/s and peak memory.
    """
    from transformers import EarlyStoppingCallback

    from llmtune.engine.callbacks import (
        METRICS_FILE,
        MetricsLogCallback,
        ProgressCallback,
        ThroughputTracker,
        TimeBudgetCallback,
        replace_default_progress,
    )

    args = training_arguments(cfg, run_dir, has_eval=inputs.eval_dataset is not None, precision=precision)
    throughput = ThroughputTracker(inputs.tokens_per_step)
    callbacks = [MetricsLogCallback(run_dir / METRICS_FILE), throughput, *inputs.callbacks]
    if time_budget_s is not None:
        callbacks.append(TimeBudgetCallback(time_budget_s))
    if args.load_best_model_at_end and cfg.train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    trainer_cls = _trainer_class()
    trainer = trainer_cls(
        model=inputs.model,
        args=args,
        train_dataset=inputs.train_dataset,
        eval_dataset=inputs.eval_dataset,
        data_collator=inputs.collator,
        processing_class=inputs.tokenizer,
        compute_metrics=inputs.compute_metrics,
        preprocess_logits_for_metrics=inputs.preprocess_logits,
        callbacks=callbacks,
    )
    trainer.derive_metrics = derive_metrics
    replace_default_progress(trainer, ProgressCallback(inputs.tokens_per_step))
    return trainer, throughput


def _trainer_class() -> type:
    """A Trainer that adds derived metrics to every evaluation before they are logged."""
    from transformers import Trainer

    class LlmtuneTrainer(Trainer):
        derive_metrics: Optional[Callable[[dict[str, float], str], dict[str, float]]] = None

        def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
            output = super().evaluation_loop(*args, **kwargs)
            prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
            if self.derive_metrics is not None:
                output.metrics.update(self.derive_metrics(output.metrics, prefix))
            return output

    return LlmtuneTrainer


def resume_checkpoint(cfg: RunConfig, run_dir: Path) -> Optional[str]:
    """The checkpoint to resume from: ``--resume last`` finds the newest in the run dir."""
    from transformers.trainer_utils import get_last_checkpoint

    from llmtune.errors import ConfigError

    if not cfg.train.resume:
        return None
    if cfg.train.resume != "last":
        if not Path(cfg.train.resume).is_dir():
            raise ConfigError(f"checkpoint not found: {cfg.train.resume}; pass --resume last or a checkpoint-N folder")
        return cfg.train.resume
    last = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    if last is None:
        raise ConfigError(f"--resume: no checkpoint-N folder in {run_dir}; start without --resume")
    return last
