"""``llmtune prune``: remove whole heads, FFN channels and layers from a model -> a smaller dense HF folder.

    model (classification head or causal LM) -> its tokenizer -> data through the task's features
      -> importance on a calibration sample (engine.pruning.measure) -> surgery (engine.pruning.apply)
      -> evaluation before/after -> optional recovery fine-tune on the shared engine -> save

The output is a plain ``save_pretrained`` folder with a smaller config, so ``AutoModel...from_pretrained``
and every llmtune command load it. The runner reuses the tasks' features and collators and the engine;
it imports no other runner.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from llmtune.config.schema import RunConfig
from llmtune.data.sources import PROGRESS_ROWS, datasets_progress
from llmtune.dist import log
from llmtune.errors import ConfigError, ModelError
from llmtune.runs.common import RunResult, finish_run, is_fresh, removed_on_bad_input, start_run

_TASKS = {"classification": "AutoModelForSequenceClassification", "lm": "AutoModelForCausalLM"}


@dataclass
class _Prepared:
    kind: str
    task: Any
    tokenizer: Any
    model: Any
    train: Any
    eval: Optional[Any]
    collator: Any


def run(cfg: RunConfig) -> RunResult:
    """Prune ``cfg.model.name_or_path`` as ``cfg.prune`` says and return where the smaller model went."""
    from llmtune.engine import pruning
    from llmtune.modeling import count_parameters

    started = time.monotonic()
    path, kind = _model_and_kind(cfg)
    default_dir = Path("runs") / f"prune-{Path(path.rstrip('/')).name}"
    output_dir = Path(cfg.train.output_dir or default_dir).expanduser()
    cfg = cfg.model_copy(update={"task": kind, "train": cfg.train.model_copy(update={"output_dir": str(output_dir)})})
    fresh = is_fresh(cfg, output_dir)
    run_dir = start_run(cfg, default_name=default_dir.name)
    with removed_on_bad_input(run_dir, fresh):
        p = _prepare(cfg, path, kind)
        layout = pruning.layout_of(p.model)
        counts = pruning.plan_counts(layout, layout.ffn_out(layout.layers[0]).in_features, cfg.prune.heads,
                                     cfg.prune.ffn, cfg.prune.layers)
    before_params = count_parameters(p.model)[0]
    metrics: dict[str, Any] = {"params_before": before_params, **_scored(p, cfg, "before")}
    original = copy.deepcopy(p.model) if cfg.prune.recover_steps and cfg.prune.recover_distill else None
    calibration = p.train.select(range(min(cfg.prune.calibration_samples, len(p.train))))
    scores = pruning.measure(p.model, layout, _batches(calibration, p.collator, cfg.train.batch_size))
    log(f"importance measured (gradient x activation) on {scores.examples} calibration rows")
    metrics.update(pruning.apply(p.model, layout, scores, *counts))
    metrics["params_after"] = count_parameters(p.model)[0]
    metrics["param_ratio"] = metrics["params_after"] / before_params
    metrics.update(_scored(p, cfg, "pruned"))
    log(_summary(metrics, p.model.config))
    if cfg.prune.recover_steps:
        metrics.update(_recover(cfg, p, run_dir, original))
        metrics.update(_scored(p, cfg, "recovered"))
    p.model.save_pretrained(str(run_dir))
    p.tokenizer.save_pretrained(str(run_dir))
    metrics["wall_seconds"] = time.monotonic() - started
    return finish_run(cfg, run_dir, metrics)


def _model_and_kind(cfg: RunConfig) -> tuple[str, str]:
    """The model folder and what it does (classification or lm), checked before anything heavy loads."""
    from llmtune.adapters import find_adapter
    from llmtune.modeling import load_pretrained, resolve_model_path
    from llmtune.tasks.registry import task_of_architectures

    if not cfg.model.name_or_path:
        raise ConfigError("prune needs a model: llmtune prune RUN_DIR_OR_MODEL_FOLDER ...")
    if cfg.data.dataset is None:
        raise ConfigError("prune measures importance on data; pass --dataset FILE (the task's columns)")
    if not (cfg.prune.heads or cfg.prune.ffn or cfg.prune.layers):
        raise ConfigError("nothing to prune; pass --heads FRACTION, --ffn FRACTION and/or --layers N")
    folder = Path(cfg.model.name_or_path).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file() and find_adapter(folder) == folder:
        raise ModelError(f"{cfg.model.name_or_path} is a bare LoRA adapter folder; merge it first "
                         f"(`llmtune export {cfg.model.name_or_path} --merge -o FOLDER`) and prune that folder")
    path = resolve_model_path(cfg.model.name_or_path)
    config = load_pretrained(path, "AutoConfig", trust_remote_code=cfg.model.trust_remote_code)
    kind = task_of_architectures([str(a) for a in config.architectures or []])
    if kind not in _TASKS or (kind == "lm" and any(str(a).endswith("ForMaskedLM") for a in config.architectures)):
        raise ModelError(f"prune takes a classification model or a causal LM; {cfg.model.name_or_path} is "
                         f"{', '.join(config.architectures or ['of no known architecture'])}")
    return path, kind


def _prepare(cfg: RunConfig, path: str, kind: str) -> _Prepared:
    from llmtune.data.loading import load_task_data
    from llmtune.modeling import capped_max_length, load_pretrained, model_tokenizer, quiet_transformers
    from llmtune.tasks.registry import TASKS

    tokenizer = model_tokenizer(cfg, path)
    with quiet_transformers():
        model = load_pretrained(path, _TASKS[kind], trust_remote_code=cfg.model.trust_remote_code,
                                allow_pickle=cfg.model.allow_pickle)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    max_length = capped_max_length(cfg.train.max_length, model.config, tokenizer)
    data = load_task_data(cfg.data, TASKS["classification" if kind == "classification" else "lm"].columns,
                          seed=cfg.train.seed)
    for note in data.notes:
        log(note)
    with datasets_progress(len(data.train) >= PROGRESS_ROWS):
        if kind == "classification":
            return _classification(cfg, tokenizer, model, data, max_length)
        return _language_model(tokenizer, model, data, max_length)


def _classification(cfg: RunConfig, tokenizer: Any, model: Any, data: Any, max_length: int) -> _Prepared:
    from llmtune.tasks.base import training_task

    task = training_task(cfg)
    features = task.prepare(data, tokenizer, max_length)
    names = [str(n) for n in model.config.id2label.values()]
    if names != [str(n) for n in task.space.names]:
        raise ModelError(f"label spaces differ: the model predicts [{', '.join(names)}] but the data has "
                         f"[{', '.join(map(str, task.space.names))}]; prune on data with the model's labels")
    return _Prepared("classification", task, tokenizer, model, features.train, features.eval,
                     task.engine_parts(tokenizer)["collator"])


def _language_model(tokenizer: Any, model: Any, data: Any, max_length: int) -> _Prepared:
    from llmtune.errors import DataError
    from llmtune.tasks.lm import LanguageModelTask

    task = LanguageModelTask(masked=False)
    train = task.preprocess(data.train, tokenizer, max_length, desc="packing train")
    if len(train) == 0:
        raise DataError(f"the text is too short for one block of {max_length} tokens; add text or lower "
                        "--set train.max_length")
    evaluation = task.preprocess(data.validation, tokenizer, max_length, desc="packing eval") \
        if data.validation is not None else None
    return _Prepared("lm", task, tokenizer, model, train, evaluation if evaluation is not None and len(evaluation)
                     else None, task.collator(tokenizer))


def _batches(features: Any, collator: Any, batch_size: int) -> Iterator[dict[str, Any]]:
    """Collated batches of ``features`` in order, on the model's device (the CPU here)."""
    for start in range(0, len(features), batch_size):
        yield collator([features[i] for i in range(start, min(start + batch_size, len(features)))])


def _scored(p: _Prepared, cfg: RunConfig, stage: str) -> dict[str, float]:
    """Mean loss (and accuracy for classification) on the evaluation split, as ``{stage}_eval_*``."""
    import torch

    if p.eval is None:
        return {}
    p.model.eval()
    loss_sum, rows, correct = 0.0, 0, 0
    with torch.no_grad():
        for batch in _batches(p.eval, p.collator, cfg.train.eval_batch_size or cfg.train.batch_size):
            out = p.model(**batch)
            n = int(batch["labels"].shape[0])
            loss_sum, rows = loss_sum + float(out.loss) * n, rows + n
            if p.kind == "classification":
                correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
    scores = {f"{stage}_eval_loss": loss_sum / max(rows, 1)}
    if p.kind == "classification":
        scores[f"{stage}_eval_accuracy"] = correct / max(rows, 1)
    return scores


def _summary(metrics: dict[str, Any], config: Any) -> str:
    heads = metrics["heads_removed_per_layer"]
    ffn = metrics["ffn_channels_removed_per_layer"]
    removed = f" (removed {metrics['removed_layers']})" if metrics["removed_layers"] else ""
    parts = [f"pruned: {metrics['params_before']:,} -> {metrics['params_after']:,} parameters "
             f"({100 * metrics['param_ratio']:.1f} %)", f"{config.num_hidden_layers} layers{removed}"]
    if heads:
        parts.append(f"{config.num_attention_heads} heads per layer (-{heads})")
    if ffn:
        parts.append(f"FFN {config.intermediate_size} channels (-{ffn})")
    accuracy = [metrics.get(f"{s}_eval_accuracy") for s in ("before", "pruned")]
    if None not in accuracy:
        parts.append(f"eval accuracy {accuracy[0]:.3f} -> {accuracy[1]:.3f}")
    return "; ".join(parts)


def _recover(cfg: RunConfig, p: _Prepared, run_dir: Path, teacher: Optional[Any]) -> dict[str, Any]:
    """A short fine-tune of the pruned model on the same data (``prune.recover_steps`` steps); with
    ``teacher`` (the unpruned model) the loss is the distillation loss of ``engine.distill``."""
    from llmtune.engine.distill import DistillLogCallback, DistillLoss, first_callback
    from llmtune.engine.trainer import EngineInputs, build_trainer
    from llmtune.modeling import resolve_precision

    steps = cfg.prune.recover_steps
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": steps})})
    parts = p.task.engine_parts(p.tokenizer) if p.kind == "classification" else {"collator": p.collator}
    for key in ("derive_metrics", "compute_metrics", "preprocess_logits"):  # _scored reports the numbers
        parts.pop(key, None)
    loss = None
    if teacher is not None:
        loss = DistillLoss(p.model, teacher, cfg.distill.temperature, cfg.distill.alpha, shift=p.kind == "lm",
                           task_loss=parts.pop("compute_loss", None))
        parts["compute_loss"] = loss
    how = f"distilling from the unpruned model (alpha {cfg.distill.alpha:g}, T {cfg.distill.temperature:g})" \
        if loss is not None else "on the labels"
    log(f"recovery: fine-tuning the pruned model for {steps} steps {how}")
    inputs = EngineInputs(p.model, p.tokenizer, p.train, None, **parts)
    trainer, _ = build_trainer(cfg, inputs, run_dir, precision=resolve_precision(cfg.train.precision))
    if loss is not None:
        first_callback(trainer, DistillLogCallback(loss.log))
    out = trainer.train()
    return {"recover_steps": steps, "recover_train_loss": out.metrics.get("train_loss"),
            **(loss.log.summary() if loss is not None else {})}
