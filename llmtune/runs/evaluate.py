"""``llmtune eval``: a model + a dataset -> eval_metrics.json, report.md, predictions.jsonl and plots.

The spine, in the order that fails fastest on bad input (nothing heavy loads before the checks):

    model folder (run dir / HF folder / hub id) -> its config: task inferred, head checked, weights present
      -> tokenizer -> evaluation rows (columns) -> task.prepare (labels mapped through the model's
      label2id; features sorted longest first) -> model -> Trainer.predict (the engine's Trainer, the
      task's collator and metrics: the numbers training reports) -> task.finish -> outputs

A run dir's ``config.yaml`` supplies the task and the settings that decide the numbers
(``INHERITED``: max_length, QA stride and no-answer mode, the MLM rate) unless the command sets them,
so evaluating a fine-tuned run on its own evaluation data reproduces its ``metrics.json``. Per-task
work lives in each task's module (``EvalTask``, ``llmtune/tasks/base.py``); the markdown in
``llmtune.reports.run_report``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from llmtune.config.schema import RunConfig
from llmtune.errors import ConfigError
from llmtune.rundir import atomic_write_text
from llmtune.dist import is_main_process, log, main_process_first
from llmtune.modeling import check_head, check_weights
from llmtune.data.sources import PROGRESS_ROWS, datasets_progress
from llmtune.runs.common import RunResult, finish_run, is_fresh, removed_on_bad_input, start_run
from llmtune.tasks.base import EvalTask, eval_task
from llmtune.tasks.registry import TASKS, eval_name, task_of_architectures, tasks_for

METRICS_FILE = "eval_metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
# Settings of a training run that change evaluation numbers: taken from its config.yaml unless set.
INHERITED = (("train", "max_length"), ("train", "doc_stride"), ("train", "mlm_probability"), ("train", "seed"),
             ("data", "allow_no_answer"), ("data", "format"))


@dataclass
class ModelInfo:
    """The model to evaluate, as far as it is known before its weights load."""

    name: str  # as the user wrote it
    path: str  # folder holding config.json, or a hub id
    run_config: dict[str, Any]  # the run dir's config.yaml ({} for other models)
    config: Any  # the transformers config

    @property
    def architectures(self) -> list[str]:
        return [str(a) for a in (getattr(self.config, "architectures", None) or [])]


def run(cfg: RunConfig) -> RunResult:
    """Evaluate ``cfg.model.name_or_path`` on ``cfg.data.dataset`` and return the metrics and output dir."""
    started = time.monotonic()
    info = model_info(cfg)
    cfg = inherit_run_settings(cfg, info.run_config)
    task_name, why = infer_task(cfg.task, info)
    check_head(info.architectures, task_name, info.name)
    check_weights(info.path, info.name)
    task = eval_task(task_name, cfg, info.config)
    default_dir = (Path(info.name) / "eval") if info.run_config else Path("runs") / f"eval-{Path(info.path).name}"
    output_dir = Path(cfg.train.output_dir or default_dir).expanduser()
    cfg = cfg.model_copy(update={"task": task_name,
                                 "train": cfg.train.model_copy(update={"output_dir": str(output_dir)})})
    fresh = is_fresh(cfg, output_dir)
    log(f"task: {task_name} ({why})")
    run_dir = start_run(cfg, default_name=default_dir.name)
    with removed_on_bad_input(run_dir, fresh):
        prepared = _prepare(cfg, task, info)
    prepared.facts["task"] = f"{task_name} ({why})"
    return _evaluate(prepared, run_dir, started)


def model_info(cfg: RunConfig) -> ModelInfo:
    """Resolve the model and read its config (and a run dir's config.yaml) without loading weights."""
    from llmtune.config.loader import parse_yaml
    from llmtune.modeling import load_pretrained, resolve_model_path

    if not cfg.model.name_or_path:
        raise ConfigError("eval needs a model: pass --model RUN_DIR, a Hugging Face model folder or a hub id")
    name = cfg.model.name_or_path
    path = resolve_model_path(name)
    run_yaml = Path(name).expanduser() / "config.yaml"
    run_config = parse_yaml(run_yaml.read_text(encoding="utf-8"), str(run_yaml)) if run_yaml.is_file() else None
    config = load_pretrained(path, "AutoConfig", trust_remote_code=cfg.model.trust_remote_code)
    return ModelInfo(name, path, run_config if isinstance(run_config, dict) else {}, config)


def inherit_run_settings(cfg: RunConfig, run_config: dict[str, Any]) -> RunConfig:
    """``cfg`` with the ``INHERITED`` settings of the run's config where the eval command left them unset."""
    updates: dict[str, dict[str, Any]] = {}
    for section, key in INHERITED:
        part = getattr(cfg, section)
        value = (run_config.get(section) or {}).get(key)
        if value is None or key in part.model_fields_set or key not in type(part).model_fields:
            continue
        updates.setdefault(section, {})[key] = value
    return cfg.model_copy(update={s: getattr(cfg, s).model_copy(update=u) for s, u in updates.items()})


def infer_task(requested: Optional[str], info: ModelInfo) -> tuple[str, str]:
    """The task to evaluate and where it came from (``--task``, the run's config, the architecture).

    Raises:
        ConfigError: No ``--task`` and nothing to infer it from.
    """
    if requested:
        return eval_name(requested), "--task"
    from_run = info.run_config.get("task")
    if from_run in TASKS:
        return eval_name(from_run), "from the run's config.yaml"
    task = task_of_architectures(info.architectures)
    if task:
        detail = "; pass --task generation to score prompt/response data" if task == "lm" else ""
        return task, f"from the model's architecture {info.architectures[0]}{detail}"
    found = ", ".join(info.architectures) or "none recorded"
    raise ConfigError(f"cannot infer the task of {info.name} (architectures: {found}); pass --task "
                      f"{', '.join(tasks_for('eval')[:-1])} or {tasks_for('eval')[-1]}")


@dataclass
class _Prepared:
    cfg: RunConfig
    task: EvalTask
    tokenizer: Any
    model: Any
    precision: str
    facts: dict[str, Any]
    notes: list[str]


def load_eval_rows(cfg: RunConfig, columns: Any) -> tuple[Any, str, list[str]]:
    """The rows to evaluate: ``--split`` of ``--dataset`` (default: validation/dev/test if present, else train).

    Columns are mapped as for training (flags, ``--columns``, aliases) and checked against ``columns``;
    ``--max-samples`` keeps the first N rows.

    Returns:
        ``(rows, where, notes)``.
    """
    from llmtune.data.columns import requested_renames
    from llmtune.data.loading import default_eval_split, describe, map_columns, non_empty_rows
    from llmtune.data.sources import load_source, select_split

    spec, notes = cfg.data.dataset, []
    source = load_source(spec)
    split = cfg.data.eval_split or default_eval_split(source, spec)
    where = describe(spec, split)
    rows = non_empty_rows(select_split(source, split, spec, "--split"), where)
    cap = min(n for n in (cfg.data.max_samples, cfg.data.max_eval_samples, len(rows)) if n is not None)
    if cap < len(rows):
        notes.append(f"max_samples: evaluating the first {cap} of {len(rows)} rows of {where}")
        rows = rows.select(range(cap))
    return map_columns(rows, requested_renames(cfg.data), columns, where, notes), where, notes


def _prepare(cfg: RunConfig, task: Any, info: ModelInfo) -> _Prepared:
    from llmtune.modeling import capped_max_length, model_tokenizer, resolve_precision

    precision = resolve_precision(cfg.train.precision)
    tokenizer = model_tokenizer(cfg, info.path)
    task.check_tokenizer(tokenizer)
    max_length = capped_max_length(cfg.train.max_length, info.config, tokenizer)
    rows, where, notes = load_eval_rows(cfg, task.columns)
    with main_process_first(), datasets_progress(len(rows) >= PROGRESS_ROWS):
        task.prepare(rows, tokenizer, max_length, where)
    batch = cfg.train.eval_batch_size or cfg.train.batch_size
    notes += [*task.notes, f"{len(task.features):,} {TASKS[task.name].unit} of up to "
              f"{max_length} tokens scored by Trainer.predict with the task's collator and metrics (as in training), "
              f"in batches of {batch}, longest first, each padded only to its own longest row"]
    for note in notes:
        log(note)
    model = _load_model(cfg, task, info, tokenizer)
    facts = {"model": info.name, "data": where, "rows": len(rows), "max_length": max_length, "batch_size": batch}
    return _Prepared(cfg, task, tokenizer, model, precision, facts, notes)


def _load_model(cfg: RunConfig, task: Any, info: ModelInfo, tokenizer: Any) -> Any:
    from llmtune.modeling import count_parameters, format_params, load_pretrained, quiet_transformers

    with quiet_transformers():
        model, loading = load_pretrained(info.path, task.auto_class, trust_remote_code=cfg.model.trust_remote_code,
                                         allow_pickle=cfg.model.allow_pickle, output_loading_info=True)
    missing = sorted({str(k).rsplit(".", 1)[0] for k in loading.get("missing_keys", ())})
    if missing:
        log(f"warning: weights missing from {info.name} (randomly initialised, so scores mean little): "
            f"{', '.join(missing)}")
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    log(f"model: {info.name} as {type(model).__name__}, {format_params(count_parameters(model)[0])} parameters")
    return model


def _evaluate(p: _Prepared, run_dir: Path, started: float) -> RunResult:
    import torch

    from llmtune.engine.trainer import EngineInputs, build_trainer

    inputs = EngineInputs(p.model, p.tokenizer, None, None, **p.task.engine_parts(p.tokenizer))
    trainer, _ = build_trainer(p.cfg, inputs, run_dir, precision=p.precision)  # with eval progress (PredictionProgress)
    torch.manual_seed(p.cfg.train.seed)
    output = trainer.predict(p.task.features, metric_key_prefix="eval")
    if not is_main_process():
        return RunResult(run_dir, dict(output.metrics))
    extra, records = p.task.finish(output, run_dir, trainer.model, p.tokenizer)
    notes = p.notes + [n for n in p.task.notes if n not in p.notes]  # finish may add some
    metrics = {**p.facts, "eval_features": len(p.task.features), **output.metrics, **extra, "notes": notes,
               "wall_seconds": time.monotonic() - started}
    _write_outputs(run_dir, metrics, records)
    return finish_run(p.cfg, run_dir, metrics, METRICS_FILE)


def _write_outputs(run_dir: Path, metrics: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """predictions.jsonl and report.md, each written whole or not at all."""
    from llmtune.reports.run_report import eval_report

    if records:
        text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        atomic_write_text(run_dir / PREDICTIONS_FILE, text)
    atomic_write_text(run_dir / "report.md", eval_report(run_dir, metrics, records))
