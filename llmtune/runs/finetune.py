"""``llmtune finetune``: adapt a pretrained model to a task -> Trainer -> run dir.

The spine is the same for every task and lives here:

    data -> model config -> tokenizer -> task.prepare (labels, features: every data check)
         -> model with the task's head (+ LoRA) -> Trainer -> final evaluation -> task.report -> save

Everything that differs between tasks sits behind ``FinetuneTask`` (``llmtune/tasks/base.py``), one
module per task named in the task registry. Bad input fails before the model's weights load, and a
fresh run dir that failed that way is removed so the corrected command can simply be rerun.
``--dry-run`` goes through the same preparation with the model on the meta device (``dry_run``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from llmtune.adapters import (apply_lora, base_quantization, freeze_input_embeddings, freeze_lower_layers,
                              quantizing_load, save_merged)
from llmtune.config.schema import RunConfig
from llmtune.dist import is_main_process, log, main_process_first, world_size
from llmtune.errors import ConfigError, ModelError
from llmtune.modeling import capped_max_length, model_tokenizer, quiet_transformers
from llmtune.data.sources import PROGRESS_ROWS, datasets_progress
from llmtune.runs.common import RunResult, finish_run, is_fresh, removed_on_bad_input, start_run, warn_few_steps
from llmtune.tasks.base import Features, FinetuneTask, training_task
from llmtune.tasks.registry import TASKS

# Above this size the small-model default learning rate (recipes/classification/default.yaml) is risky.
LARGE_MODEL_PARAMS = 60_000_000


@dataclass
class _Prepared:
    """Everything training needs, checked before the first step."""

    cfg: RunConfig
    task: FinetuneTask
    tokenizer: Any
    model: Any
    features: Features
    precision: str
    checkpoint: Optional[str]
    new_parameters: frozenset[str] = frozenset()


def run(cfg: RunConfig) -> RunResult:
    """Fine-tune ``cfg.model.name_or_path`` on ``cfg.task`` and return where everything went."""
    from llmtune.engine.trainer import resume_checkpoint

    started = time.monotonic()
    task, model_path = _task_and_model(cfg)
    default_dir = Path("runs") / f"finetune-{task.name}-{Path(model_path.rstrip('/')).name}"
    output_dir = Path(cfg.train.output_dir or default_dir).expanduser()
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"output_dir": str(output_dir)})})
    fresh = is_fresh(cfg, output_dir)
    run_dir = start_run(cfg, default_name=default_dir.name)
    with removed_on_bad_input(run_dir, fresh):
        prepared = _prepare(cfg, task, model_path, resume_checkpoint(cfg, run_dir))
    warn_few_steps(cfg, len(prepared.features.train), TASKS[task.name].unit)
    return _train(prepared, run_dir, started)


def dry_run(cfg: RunConfig, world_size: Optional[int] = None) -> dict[str, Any]:
    """``--dry-run``: the run's own preparation (data checks, tokenizer, features) with the model on the
    meta device, then the memory, steps and time estimates (``engine.estimates``); nothing is trained."""
    from llmtune.engine.estimates import Plan, report_plan

    task, model_path = _task_and_model(cfg)
    p = _prepare(cfg, task, model_path, None, meta=True)
    lengths = p.features.train["length"]
    n_eval = len(p.features.eval) if p.features.eval is not None else 0
    plan = Plan(p.model, f"{cfg.model.name_or_path} ({type(p.model).__name__})", len(p.features.train), n_eval,
                TASKS[task.name].unit, sum(lengths) / max(1, len(lengths)), max(lengths, default=cfg.train.max_length),
                lm_head=task.auto_class == "AutoModelForCausalLM")
    return report_plan(cfg, plan, world_size)


def _task_and_model(cfg: RunConfig) -> tuple[FinetuneTask, str]:
    """The task plug-in and the model's folder (or hub id), checked before anything loads."""
    from llmtune.compress import refuse_compressed
    from llmtune.modeling import detect_device, resolve_model_path

    task = training_task(cfg)
    base_quantization(cfg.lora.quantize_base, detect_device()["cuda"])  # nf4 without CUDA fails before data loads
    if not cfg.model.name_or_path:
        raise ConfigError("finetune starts from a pretrained model; pass --model HUB_ID, a model folder or a run dir")
    model_path = resolve_model_path(cfg.model.name_or_path)
    refuse_compressed(model_path, "fine-tune")  # int8/ONNX deployment folders do not train
    return task, model_path


def _prepare(cfg: RunConfig, task: FinetuneTask, model_path: str, checkpoint: Optional[str],
             meta: bool = False) -> _Prepared:
    """Data, tokenizer, features and model, every check before training (``meta``: the model's shapes only)."""
    from llmtune.data.loading import load_task_data
    from llmtune.engine.reliability import check_disk_space
    from llmtune.modeling import count_parameters, load_pretrained, resolve_precision

    precision = resolve_precision(cfg.train.precision)
    data = load_task_data(cfg.data, task.columns, seed=cfg.train.seed)
    for note in data.notes:
        log(note)
    config = load_pretrained(model_path, "AutoConfig", trust_remote_code=cfg.model.trust_remote_code)
    tokenizer = model_tokenizer(cfg, model_path)
    task.check_tokenizer(tokenizer)
    max_length = capped_max_length(cfg.train.max_length, config, tokenizer)
    with main_process_first(), datasets_progress(len(data.train) >= PROGRESS_ROWS):
        features = task.prepare(data, tokenizer, max_length)  # rank 0 writes the datasets cache, the others load it
    for note in features.notes:
        log(note)
    check_head_size(cfg, config, task.model_kwargs())
    if meta:
        return _Prepared(cfg, task, tokenizer, _meta_model(cfg, task, model_path, config), features, precision, None)
    model, new_parameters = _model(cfg, task, model_path, tokenizer, config)
    _check_vocab(cfg, model, tokenizer)
    if is_main_process():
        check_disk_space(Path(cfg.train.output_dir), *count_parameters(model))
    if hasattr(task, "check_model"):  # optional hook: checks that need the loaded model
        task.check_model(model)
    return _Prepared(cfg, task, tokenizer, model, features, precision, checkpoint, new_parameters)


def _check_vocab(cfg: RunConfig, model: Any, tokenizer: Any) -> None:
    """Refuse a tokenizer whose token ids run past the model's embedding matrix (it would fail mid-training)."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ModelError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary (embedding matrix) "
                         f"has {rows}; pass the tokenizer the model was trained with"
                         + (" (drop model.tokenizer)" if cfg.model.tokenizer else ""))


def check_head_size(cfg: RunConfig, config: Any, kwargs: dict[str, Any]) -> None:
    """Refuse, before loading weights, a trained classification head of the wrong size."""
    has_head = any(str(a).endswith("ForSequenceClassification") for a in (getattr(config, "architectures", None) or []))
    wanted = kwargs.get("num_labels")
    if has_head and wanted and config.num_labels != wanted and not cfg.model.ignore_mismatched_sizes:
        names = ", ".join(str(v) for v in list(config.id2label.values())[:5])
        raise ModelError(
            f"{cfg.model.name_or_path} already has a classification head for {config.num_labels} labels ({names}) "
            f"but the data has {wanted} classes; pass --set model.ignore_mismatched_sizes=true to replace the head "
            "with a new one trained from scratch"
        )


def _model(cfg: RunConfig, task: Any, model_path: str, tokenizer: Any, config: Any) -> tuple[Any, frozenset[str]]:
    """The pretrained model with the task's head, and the names of the weights it had to create."""
    import torch

    from llmtune.modeling import count_parameters, detect_device, dropout_fields, format_params, load_pretrained

    quantization = base_quantization(cfg.lora.quantize_base, detect_device()["cuda"])
    kwargs = {**dropout_fields(config, cfg.model.dropout), **dict(cfg.model.config), **task.model_kwargs(),
              **quantization}
    if cfg.model.ignore_mismatched_sizes:
        kwargs["ignore_mismatched_sizes"] = True
    torch.manual_seed(cfg.train.seed)  # the new head's initialisation
    try:
        with quiet_transformers(), quantizing_load(quantization):
            model, info = load_pretrained(model_path, task.auto_class, trust_remote_code=cfg.model.trust_remote_code,
                                          allow_pickle=cfg.model.allow_pickle, output_loading_info=True, **kwargs)
    except RuntimeError as exc:
        if "mismatch" not in str(exc):
            raise
        raise ModelError(f"{cfg.model.name_or_path} has weights whose shape does not fit this task (e.g. a head "
                         "for another number of labels); pass --set model.ignore_mismatched_sizes=true to "
                         "re-initialise them") from exc
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    total, _ = count_parameters(model)
    log(f"model: {cfg.model.name_or_path} as {type(model).__name__}, {format_params(total)} parameters")
    if total > LARGE_MODEL_PARAMS and cfg.train.lr > 1e-4 and not cfg.lora.enabled:
        log(f"warning: lr {cfg.train.lr:g} is high for a {format_params(total)}-parameter model (the default suits "
            "models up to ~50M); base-size models usually fine-tune at 2e-5 to 5e-5: pass --lr or a model recipe")
    new = sorted({key.rsplit(".", 1)[0] for key in info.get("missing_keys", ())})
    if new:
        faster = "" if cfg.lora.enabled or cfg.train.head_lr_multiplier == 1 else f", at {cfg.train.head_lr_multiplier:g}x the lr"
        log(f"new weights (trained from scratch{faster}): {', '.join(new)}")
    # transformers lists mismatched keys as (name, checkpoint shape, model shape) tuples.
    mismatched = [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())]
    resized = sorted({str(key).rsplit(".", 1)[0] for key in mismatched})
    if resized:
        log(f"re-initialised for a new shape: {', '.join(resized)}")
    # With LoRA the new head trains in full through modules_to_save, at the base lr.
    new_parameters = frozenset() if cfg.lora.enabled else frozenset(str(k) for k in info.get("missing_keys", ()))
    return _trained_parts(cfg, model, new, task.auto_class), new_parameters


def _trained_parts(cfg: RunConfig, model: Any, new_modules: list[str], auto_class: str) -> Any:
    """``model`` with the run's frozen weights or LoRA adapters (the same for a real and a meta model)."""
    if cfg.lora.enabled:
        if cfg.lora.lr_multiplier != 1:
            log(f"LoRA: lr {cfg.train.lr * cfg.lora.lr_multiplier:g} (train.lr {cfg.train.lr:g} x lora.lr_multiplier "
                f"{cfg.lora.lr_multiplier:g})")
        return apply_lora(cfg, model, new_modules, auto_class)
    if cfg.train.freeze_embeddings:
        freeze_input_embeddings(model)
    if cfg.train.freeze_layers:
        freeze_lower_layers(model, cfg.train.freeze_layers)
    return model


def _meta_model(cfg: RunConfig, task: FinetuneTask, model_path: str, config: Any) -> Any:
    """The task model on the meta device (shapes only, no weights read), with the run's freezing or LoRA."""
    import torch
    import transformers

    from llmtune.modeling import dropout_fields, load_pretrained

    kwargs = {**dropout_fields(config, cfg.model.dropout), **dict(cfg.model.config), **task.model_kwargs()}
    config = load_pretrained(model_path, "AutoConfig", trust_remote_code=cfg.model.trust_remote_code, **kwargs)
    with torch.device("meta"):
        model = getattr(transformers, task.auto_class).from_config(config, trust_remote_code=cfg.model.trust_remote_code)
        return _trained_parts(cfg, model, _new_modules(model, model_path), task.auto_class)


def _train(p: _Prepared, run_dir: Path, started: float) -> RunResult:
    from llmtune.engine.budget import finish_seconds, fit_to_budget, steps_done
    from llmtune.engine.trainer import EngineInputs, build_trainer, final_evaluate

    # A time budget fits the step count, warm-up and decay to the steps that fit (evaluations and save included).
    budget = fit_to_budget(p.cfg, started, n_rows=len(p.features.train), done=steps_done(p.checkpoint),
                           n_eval_rows=len(p.features.eval) if p.features.eval is not None else 0,
                           reserve_seconds=finish_seconds(p.model))
    cfg = budget.cfg
    parts = p.task.engine_parts(p.tokenizer)
    derive_metrics = parts.pop("derive_metrics", None)  # e.g. perplexity from the eval loss
    callbacks = [*parts.pop("callbacks", []), *budget.callbacks]
    inputs = EngineInputs(p.model, p.tokenizer, p.features.train, p.features.eval,
                          tokens_per_step=_tokens_per_step(cfg, p.features.train),
                          group_by_length="length" in p.features.train.column_names,
                          new_parameters=p.new_parameters, callbacks=callbacks, **parts)
    trainer, throughput = build_trainer(cfg, inputs, run_dir, precision=p.precision,
                                        time_budget_s=budget.seconds_left, derive_metrics=derive_metrics)
    metrics = dict(trainer.train(resume_from_checkpoint=p.checkpoint).metrics)
    if p.features.eval is not None:
        metrics.update(final_evaluate(trainer))
        if is_main_process():
            metrics.update(p.task.report(run_dir))
    _save(trainer, p, run_dir)
    metrics.update(throughput.summary())
    metrics["wall_seconds"] = time.monotonic() - started
    return finish_run(cfg, run_dir, metrics)


def _tokens_per_step(cfg: RunConfig, train: Any) -> Optional[int]:
    """Average (unpadded) tokens per optimizer step, for tokens/s; rows vary in length."""
    if "length" not in train.column_names or len(train) == 0:
        return None
    mean = sum(train["length"]) / len(train)
    return max(1, round(mean * cfg.train.batch_size * cfg.train.grad_accum * world_size()))


def _save(trainer: Any, p: _Prepared, run_dir: Path) -> None:
    """Weights, config and tokenizer at the top of the run dir (LoRA: merged there, adapters in adapter/)."""
    if not p.cfg.lora.enabled:
        trainer.save_model(str(run_dir))  # the Trainer's processing_class (tokenizer) is saved with it
        return
    if not is_main_process():
        return
    model = trainer.model
    with quiet_transformers():
        model.save_pretrained(str(run_dir / "adapter"))
        # A merged copy loads anywhere (AutoModel..., pipelines, llmtune eval) without peft.
        save_merged(model, run_dir)  # a quantized base is dequantized one shard at a time
    p.tokenizer.save_pretrained(str(run_dir))
    p.tokenizer.save_pretrained(str(run_dir / "adapter"))
    log(f"LoRA adapters saved in {run_dir / 'adapter'}; merged model in {run_dir}")


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
