"""The one training engine: a ``transformers.Trainer`` configured from a ``RunConfig``.

Runners hand over a model, tokenizer, datasets and a task's collator/metrics; this module turns the
config into ``TrainingArguments`` and wires llmtune's callbacks. Nothing task-specific lives here.
Because Trainer runs on Accelerate, ``accelerate launch -m llmtune ...`` gives multi-process for free.

After training, runners use ``final_evaluate`` (which reuses an evaluation already made at the last
step) and ``mfu_metrics`` (model FLOPs utilisation against a datasheet or measured peak).
"""

from __future__ import annotations

import inspect
import logging
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments
from transformers.loss.loss_utils import LOSS_MAPPING
from transformers.trainer_utils import rotate_checkpoints

from llmtune.config.schema import RunConfig
from llmtune.dist import log
from llmtune.engine import reliability
from llmtune.engine.callbacks import METRICS_FILE, MetricsLogCallback, ThroughputTracker, TimeBudgetCallback
from llmtune.engine.progress import PredictionProgress, ProgressCallback, replace_default_progress
from llmtune.engine.reliability import GracefulStop, NonFiniteGuard, RewindLogs
from llmtune.engine.samples import SAMPLES_FILE
from llmtune.engine.sampling import LengthBucketSampler
from llmtune.engine.trackers import active_extra_callbacks, attach_trackers, check_trackers, resolve_report_to
from llmtune.errors import ConfigError
from llmtune.modeling import quiet_transformers


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
        compute_loss: Custom loss ``f(outputs, labels, num_items_in_batch)`` (e.g. class-weighted), or None.
        group_by_length: Batch examples of similar length together (features need a ``length`` column).
        new_parameters: Names of parameters trained from scratch (a new task head); they learn at
            ``train.head_lr_multiplier`` times the learning rate.
        trainer_class: A task's own Trainer, a subclass of ``LlmtuneTrainer`` that mixes in a library's trainer
            (``class _(LlmtuneTrainer, trl.DPOTrainer)``: every override here calls ``super()``, so llmtune's
            behaviour wraps the library's); its ``args_class`` attribute names its arguments class. None: LlmtuneTrainer.
        trainer_args: Extra fields of that arguments class (e.g. DPO's ``beta``), on top of ``cfg.train``'s.
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
    compute_loss: Optional[Callable[..., Any]] = None
    group_by_length: bool = False
    new_parameters: frozenset[str] = frozenset()
    trainer_class: Optional[type] = None
    trainer_args: dict[str, Any] = field(default_factory=dict)


def training_arguments(
    cfg: RunConfig, output_dir: Path, *, has_eval: bool, precision: str = "fp32", group_by_length: bool = False,
    args_class: type = TrainingArguments, extra: Optional[dict[str, Any]] = None,
) -> Any:
    """Map ``cfg.train`` onto ``transformers.TrainingArguments``.

    Args:
        cfg: The resolved run config.
        output_dir: Run directory (checkpoints go to ``output_dir/checkpoint-N``).
        has_eval: Whether there is evaluation data (else no evaluation strategy).
        precision: Resolved precision (``fp32``, ``bf16`` or ``fp16``), never ``auto``.
        group_by_length: Length-grouped sampling (fewer pad tokens per batch with dynamic padding).
        args_class: ``TrainingArguments`` or a subclass (a library trainer's config, e.g. TRL's DPOConfig).
        extra: Fields of ``args_class`` beyond TrainingArguments' (they may not override the mapped ones).

    Returns:
        The TrainingArguments.
    """
    t = cfg.train
    on_gpu = torch.cuda.is_available()
    eval_strategy = ("steps" if t.eval_steps else "epoch") if has_eval else "no"
    save_strategy = "steps" if (t.save_steps or t.eval_steps) else "epoch"
    best_model = bool(has_eval and t.early_stopping_patience)
    if best_model and save_strategy != eval_strategy:
        save_strategy = eval_strategy  # load_best_model_at_end needs matching strategies
    return args_class(
        **(extra or {}),
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr * (cfg.lora.lr_multiplier if cfg.lora.enabled else 1.0),
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
        **_checkpointing_argument(t.gradient_checkpointing, args_class),
        torch_compile=t.compile,
        auto_find_batch_size=t.auto_find_batch_size,
        ddp_find_unused_parameters=False,
        report_to=resolve_report_to(t.report_to),  # engine/trackers.py: where each tracker writes
        run_name=Path(output_dir).name,
        disable_tqdm=True,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        save_only_model=False,
    )


def _checkpointing_argument(enabled: bool, args_class: type = TrainingArguments) -> dict[str, bool]:
    """Activation checkpointing under the name this transformers knows.

    transformers 5 renamed ``gradient_checkpointing`` to ``activation_checkpointing`` and warns on
    every use of the old name, even ``False``; so pass nothing when off, unless ``args_class`` turns it
    on by default (TRL's configs do), which must then be overridden.
    """
    names = {f.name for f in fields(args_class)}
    name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    if enabled:
        return {name: True}
    defaults = {f.name: f.default for f in fields(args_class)}
    return {name: False} if defaults.get("gradient_checkpointing") is True else {}


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
    _quiet_false_alarms()
    trainer_class = inputs.trainer_class or LlmtuneTrainer
    if not issubclass(trainer_class, LlmtuneTrainer):
        raise TypeError(f"{trainer_class.__name__} must subclass LlmtuneTrainer (llmtune's callbacks and checkpoints)")
    check_trackers(cfg.train.report_to)
    args = training_arguments(
        cfg, run_dir, has_eval=inputs.eval_dataset is not None, precision=precision,
        group_by_length=inputs.group_by_length,
        args_class=getattr(trainer_class, "args_class", TrainingArguments), extra=inputs.trainer_args,
    )
    throughput = ThroughputTracker(inputs.tokens_per_step)
    # Runner callbacks (e.g. sample generation after evaluation) go before the throughput tracker and
    # time budget, so the time they take counts as evaluation time, not as training step time.
    stop = GracefulStop()
    callbacks = [RewindLogs(run_dir / METRICS_FILE, run_dir / SAMPLES_FILE), MetricsLogCallback(run_dir / METRICS_FILE),
                 *inputs.callbacks, *active_extra_callbacks(), throughput, stop]
    if time_budget_s is not None:
        callbacks.append(TimeBudgetCallback(time_budget_s))
    if args.load_best_model_at_end and cfg.train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    declare_loss_normalisation(inputs.model)
    # Optional parts are passed only when given: a library trainer may not take them (TRL's DPOTrainer has
    # no compute_loss_func) and builds its own default collator.
    optional = {"data_collator": inputs.collator, "compute_metrics": inputs.compute_metrics,
                "preprocess_logits_for_metrics": inputs.preprocess_logits, "compute_loss_func": inputs.compute_loss}
    trainer = trainer_class(
        model=inputs.model,
        args=args,
        train_dataset=inputs.train_dataset,
        eval_dataset=inputs.eval_dataset,
        processing_class=inputs.tokenizer,
        callbacks=callbacks,
        **{name: value for name, value in optional.items() if value is not None},
    )
    trainer.derive_metrics = derive_metrics
    trainer.graceful_stop = stop
    trainer.nonfinite = NonFiniteGuard(cfg.train.on_nonfinite, run_dir, cfg.train.lr)
    trainer.new_parameter_lr = (inputs.new_parameters, cfg.train.head_lr_multiplier)
    progress = ProgressCallback(inputs.tokens_per_step)
    replace_default_progress(trainer, progress)
    trainer.add_callback(PredictionProgress(beside=progress))  # evaluations show progress as `llmtune eval` does
    attach_trackers(trainer, run_dir)
    return trainer, throughput


def declare_loss_normalisation(model: Any) -> bool:
    """Tell the Trainer whether ``model``'s loss divides by ``num_items_in_batch``; return the answer.

    The Trainer assumes so for every model whose forward takes ``**kwargs`` and then neither divides the
    loss by the gradient-accumulation steps nor leaves it alone across processes (it multiplies it by the
    process count, expecting a division by the global item count). Sequence-classification and QA losses
    are plain batch means, so their loss and gradients came out N times too large on N processes (and
    grad_accum times on one). Models that say ``accepts_loss_kwargs`` themselves are left as they are.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    if "accepts_loss_kwargs" in vars(type(base)) or "accepts_loss_kwargs" in vars(base):
        return bool(base.accepts_loss_kwargs)
    loss = getattr(base, "_loss_function", None) or LOSS_MAPPING.get(getattr(base, "loss_type", None) or "")
    counts = loss is None or "num_items_in_batch" in inspect.signature(loss).parameters  # unknown: Trainer's guess
    if not counts:
        base.accepts_loss_kwargs = False
    return counts


class LlmtuneTrainer(Trainer):
    """A Trainer that adds derived metrics to every evaluation and saves without progress bars.

    It also makes training survivable (``engine/reliability.py``): Ctrl-C/SIGTERM stop after a step with
    a checkpoint and raise ``TrainingInterrupted``; a checkpoint is marked complete only once written;
    a non-finite loss stops the run (or skips the batch) before it reaches the weights.

    Public hooks are used where transformers has them. The private methods overridden below were checked
    against transformers 5.25.0; ``tests/unit/test_trainer_hooks.py`` fails when one disappears or its
    parameters change.
    """

    derive_metrics: Optional[Callable[[dict[str, float], str], dict[str, float]]] = None
    new_parameter_lr: tuple[frozenset[str], float] = (frozenset(), 1.0)
    graceful_stop: Optional[reliability.GracefulStop] = None
    nonfinite: Optional[reliability.NonFiniteGuard] = None
    loss_before: tuple[float, int] = (0.0, 0)
    """Sum of the per-step training losses and step count before this ``train()`` call (a resumed run)."""

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Train; a stop signal during training raises ``TrainingInterrupted`` once the checkpoint is saved.

        A resumed run's ``train_loss`` is the whole run's mean: the loss sum saved in the checkpoint
        (``LOSS_TOTAL_FILE``) joins the Trainer's own sum over the steps after the resume.
        """
        self.loss_before = read_loss_total(kwargs.get("resume_from_checkpoint", args[0] if args else None),
                                           self.args.output_dir)
        stop = self.graceful_stop
        if stop is None:
            return _with_training_loss(super().train(*args, **kwargs))
        with stop.installed():
            output = super().train(*args, **kwargs)
        if stop.step is not None:  # a signal arrived before the last step ended (after it: training is done)
            raise reliability.interrupted_error(stop, Path(self.args.output_dir), sys.argv)
        return _with_training_loss(output)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Log as the Trainer does; the end-of-training ``train_loss`` of a resumed run covers the whole run."""
        before_sum, before_steps = self.loss_before
        if "train_loss" in logs and before_steps and self.state.global_step > 0:
            after_steps = self.state.global_step - before_steps  # the Trainer's divisor: steps of this call
            logs["train_loss"] = (before_sum + logs["train_loss"] * after_steps) / self.state.global_step
        super().log(logs, *args, **kwargs)

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any) -> Any:
        """The Trainer's loss, passed through the non-finite guard while training."""
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        if self.nonfinite is None or not model.training:
            return result
        loss = self.nonfinite.check(result[0] if return_outputs else result, model, self.state.global_step + 1)
        return (loss, *result[1:]) if return_outputs else loss

    def create_optimizer(self, model: Any = None) -> Any:
        """The Trainer's optimizer, with new parameters (a task head) at ``head_lr_multiplier`` x the lr."""
        optimizer = super().create_optimizer(model)
        names, multiplier = self.new_parameter_lr
        if names and multiplier != 1.0:
            scale_lr_of(optimizer, model or self.model, names, multiplier)
        return optimizer

    def save_model(self, *args: Any, **kwargs: Any) -> None:
        """Save as the Trainer does, without the "Writing model shards" bar drawn for every checkpoint."""
        with quiet_transformers():
            super().save_model(*args, **kwargs)

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate as the Trainer does, then add ``derive_metrics`` under the same prefix."""
        output = super().evaluation_loop(*args, **kwargs)
        if self.derive_metrics is not None:
            prefix = evaluation_prefix(self, args, kwargs)
            output.metrics.update(self.derive_metrics(output.metrics, prefix))
        return output

    # Private override (transformers 5.25.0): Trainer._save_checkpoint(model, trial) writes the checkpoint
    # folder ``<_get_output_dir(trial)>/checkpoint-<global_step>`` and then rotates old checkpoints with
    # ``rotate_checkpoints(save_total_limit=self.args.save_total_limit)`` (None: no rotation), on the
    # processes where ``args.should_save``. There is no public hook between writing and rotating.
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        # Rotation waits until the new checkpoint is marked complete: a kill in between must never leave
        # only unfinished checkpoints behind.
        run_dir = self._get_output_dir(trial=trial)
        folder = Path(run_dir) / f"checkpoint-{self.state.global_step}"
        if self.args.should_save:  # saving the same step again: incomplete until marked anew
            (folder / reliability.CHECKPOINT_MARKER).unlink(missing_ok=True)
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        if self.args.should_save:
            write_loss_total(folder, loss_sum_so_far(self), self.state.global_step)
            reliability.mark_checkpoint_complete(folder)
            rotate_checkpoints(run_dir, save_total_limit=limit, use_mtime=True,
                               best_model_checkpoint=self.state.best_model_checkpoint)

    # Private override (transformers 5.25.0): the evaluation DataLoader takes its sampler from
    # Trainer._get_eval_sampler(eval_dataset) (``sampler_fn=self._get_eval_sampler``); None lets the
    # DataLoader/Accelerate shard the data in order across processes.
    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        # transformers 5 also length-groups evaluation batches under group_by_length, which reorders
        # predictions; QA post-processing pairs them with features by position, so keep data order.
        if eval_dataset is None or self.args.world_size > 1:
            return None
        return torch.utils.data.SequentialSampler(eval_dataset)

    # Private override (transformers 5.25.0): the training DataLoader takes its sampler from
    # Trainer._get_train_sampler(train_dataset=None) (``sampler_fn=self._get_train_sampler``; None means
    # ``self.train_dataset``), and Accelerate then splits each batch of indices across processes.
    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or "length" not in getattr(dataset, "column_names", ()):
            return super()._get_train_sampler(train_dataset)
        # Buckets span the global batch, which Accelerate then deals out across processes, so N
        # processes see the same batches as one process with an N-times larger batch.
        global_batch = self.args.per_device_train_batch_size * max(1, self.args.world_size)
        return LengthBucketSampler(dataset["length"], global_batch)

    # Private override (transformers 5.25.0): after loading a checkpoint's weights (resume, best model at
    # end) the Trainer calls _issue_warnings_after_load(load_result) with torch's ``_IncompatibleKeys``
    # named tuple (``missing_keys``, ``unexpected_keys``), which warns about each list when not empty.
    def _issue_warnings_after_load(self, load_result: Any) -> None:
        # Tied weights (lm_head = token embedding) are saved once, so resuming always "misses" the
        # second name although loading the first filled both; warn only about truly missing keys.
        shared = _shared_parameter_names(self.model)
        missing = [key for key in load_result.missing_keys if key not in shared]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))


LOSS_TOTAL_FILE = "llmtune_loss_total.json"
"""Written in each checkpoint: the run's training-loss sum and step count, so a resumed run reports the whole mean."""


def write_loss_total(folder: Path, loss_sum: float, steps: int) -> None:
    """Record ``loss_sum`` over ``steps`` optimizer steps in checkpoint ``folder`` (before it is marked complete)."""
    import json

    (Path(folder) / LOSS_TOTAL_FILE).write_text(json.dumps({"loss_sum": loss_sum, "steps": steps}))


def _with_training_loss(output: Any) -> Any:
    """A ``TrainOutput`` whose ``training_loss`` is its ``metrics["train_loss"]`` (whole-run, see ``LlmtuneTrainer.log``)."""
    loss = output.metrics.get("train_loss")
    return output._replace(training_loss=loss) if loss is not None else output


# Private attributes (transformers 5.25.0): the Trainer's training loop adds each step's loss to the tensor
# ``_tr_loss`` and drains it into the float ``_total_loss_scalar`` at each logging step; both restart from
# zero in every ``train()`` call, so a resumed run's sum lacks the steps before the resume.
# ``tests/unit/test_trainer_hooks.py`` fails when they disappear.
def loss_sum_so_far(trainer: Any) -> float:
    """Sum of the per-step training losses of the whole run up to now (all ``train()`` calls)."""
    pending = getattr(trainer, "_tr_loss", None)
    pending = float(pending.item()) if pending is not None else 0.0
    return trainer.loss_before[0] + getattr(trainer, "_total_loss_scalar", 0.0) + pending


def read_loss_total(checkpoint: Any, output_dir: str) -> tuple[float, int]:
    """``(loss_sum, steps)`` saved in the checkpoint a ``train(resume_from_checkpoint=...)`` call resumes from.

    ``(0.0, 0)`` for a fresh start, and for checkpoints written before the file existed (their resumed
    ``train_loss`` then averages the steps after the resume only, as the Trainer's does).
    """
    import json

    from transformers.trainer_utils import get_last_checkpoint

    if checkpoint is True:
        checkpoint = get_last_checkpoint(output_dir)
    if not checkpoint or not (Path(checkpoint) / LOSS_TOTAL_FILE).is_file():
        return 0.0, 0
    record = json.loads((Path(checkpoint) / LOSS_TOTAL_FILE).read_text())
    return float(record["loss_sum"]), int(record["steps"])


def evaluation_prefix(trainer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The ``metric_key_prefix`` of a ``Trainer.evaluation_loop(*args, **kwargs)`` call, positional or not.

    The call is bound to the real signature with its defaults, so a parameter moving position cannot
    silently pick another argument; a missing or renamed parameter raises ``TypeError``/``KeyError``.
    """
    bound = inspect.signature(Trainer.evaluation_loop).bind(trainer, *args, **kwargs)
    bound.apply_defaults()
    return bound.arguments["metric_key_prefix"]


def scale_lr_of(optimizer: Any, model: Any, names: frozenset[str], multiplier: float) -> int:
    """Move the parameters called ``names`` into their own groups at ``multiplier`` x the group's lr.

    Called before the scheduler exists, so the schedule scales from the new base rates. Returns how many
    parameters moved.
    """
    chosen = {id(p) for n, p in model.named_parameters() if n in names and p.requires_grad}
    moved = 0
    for group in list(optimizer.param_groups):
        picked = [p for p in group["params"] if id(p) in chosen]
        if not picked:
            continue
        group["params"] = [p for p in group["params"] if id(p) not in chosen]
        optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"},
                                   "params": picked, "lr": group["lr"] * multiplier})
        moved += len(picked)
    return moved


def _shared_parameter_names(model: Any) -> set[str]:
    """Names of parameters that share their tensor with another name (tied weights)."""
    names_by_tensor: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names_by_tensor.setdefault(id(param), []).append(name)
    return {name for names in names_by_tensor.values() if len(names) > 1 for name in names}


class _DropMessages(logging.Filter):
    """Drop log records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def _quiet_false_alarms() -> None:
    """Silence transformers warnings that are wrong for llmtune runs (idempotent)."""
    # Checkpoints saved less than a second apart (small models) look like an mtime-less filesystem;
    # the fallback it announces (ordering by step number) is what llmtune wants anyway.
    logger = logging.getLogger("transformers.trainer_utils")
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages("mtime may not be reliable"))


def final_evaluate(trainer: Any) -> dict[str, float]:
    """Evaluation metrics of the model as training left it, evaluating only when needed.

    When training ended with an evaluation at its last step (evaluation every N steps, each epoch, or
    a time-budget stop), those logged metrics describe the final model and are returned as they are;
    evaluating again would cost time and log the same numbers twice.

    Returns:
        The ``eval_*`` metrics.
    """
    state = trainer.state
    if not trainer.args.load_best_model_at_end:  # else the final weights are not those evaluated last
        for record in reversed(state.log_history):
            if record.get("step") == state.global_step and "eval_loss" in record:
                return {k: v for k, v in record.items() if k.startswith("eval_")}
    return trainer.evaluate()


def resume_checkpoint(cfg: RunConfig, run_dir: Path) -> Optional[str]:
    """The checkpoint to resume from: ``--resume last`` finds the newest intact one in the run dir.

    Incomplete or corrupt checkpoints (see ``engine/reliability.py``) are reported and skipped.
    """
    if not cfg.train.resume:
        return None
    if cfg.train.resume != "last":
        if not Path(cfg.train.resume).is_dir():
            raise ConfigError(f"checkpoint not found: {cfg.train.resume}; pass --resume last or a checkpoint-N folder")
        problem = reliability.checkpoint_problem(Path(cfg.train.resume))
        if problem:
            raise ConfigError(f"cannot resume from {cfg.train.resume}: {problem}; pass --resume last to use the "
                              "newest intact checkpoint")
        last = cfg.train.resume
    else:
        broken = reliability.checkpoint_folders(run_dir) if run_dir.is_dir() else []
        if not broken:
            raise ConfigError(f"--resume: no checkpoint-N folder in {run_dir}; start without --resume")
        last = reliability.last_good_checkpoint(run_dir)
        if last is None:  # killed while writing its first checkpoint: no trained step can be lost
            log(f"--resume last: none of the {len(broken)} checkpoint(s) in {run_dir} was completely written "
                "(killed while saving), so there is nothing to resume: starting over from step 0")
            return None
    log(f"resuming from {last}: step {reliability.checkpoint_step(Path(last))}, with the optimizer, LR schedule, RNG and data "
        "position restored (batches already trained are skipped)")
    return last


