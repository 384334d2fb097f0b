"""``report.md`` and plots of a run dir: written by ``llmtune eval``, rebuilt by ``llmtune report``.

Two kinds of folder, told apart by their metrics file:

* an evaluation (``eval_metrics.json``, ``predictions.jsonl``): the metrics with per-class scores and
  confusion matrix, notes on how it was measured, and the first errors;
* a training run (``metrics.json``, ``logs/metrics.jsonl``, ``config.yaml``): what was trained on
  what, the final metrics, the evaluation history and the training curves.

Everything is rebuilt from those files, so ``llmtune report RUN_DIR`` works on any finished (or
crashed) run, including ones made before the plots existed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from llmtune.errors import ConfigError
from llmtune.reports import report_md as md

EVAL_METRICS = "eval_metrics.json"
TRAIN_METRICS = "metrics.json"
_PLOTS = (("training curves", "curves.png"), ("confusion matrix", "confusion_matrix.png"),
          ("per-class F1", "per_class_f1.png"))
_FACTS = ("task", "model", "data", "rows", "max_length", "batch_size")
_HISTORY = ("eval_loss", "eval_accuracy", "eval_f1_macro", "eval_exact_match", "eval_f1", "eval_perplexity",
            "eval_bits_per_char")
_MAX_HISTORY = 30


def _plots(run_dir: Path) -> list[tuple[str, str]]:
    return [(caption, f"plots/{name}") for caption, name in _PLOTS if (run_dir / "plots" / name).is_file()]


def classification_plots(metrics: dict[str, Any], plots_dir: Path) -> list[Path]:
    """Redraw the confusion matrix and per-class F1 PNGs from a metrics dict that has them."""
    from llmtune.reports.plots import confusion_matrix_png, per_class_f1_png

    drawn = []
    if metrics.get("per_class"):
        drawn.append(per_class_f1_png(metrics["per_class"], plots_dir / "per_class_f1.png"))
    if metrics.get("confusion_matrix") and metrics.get("labels"):
        drawn.append(confusion_matrix_png(metrics["confusion_matrix"], metrics["labels"],
                                          plots_dir / "confusion_matrix.png"))
    return drawn


def eval_report(run_dir: Path, metrics: dict[str, Any], records: Sequence[dict[str, Any]]) -> str:
    """The markdown of an evaluation (``llmtune eval``'s ``report.md``)."""
    facts = [(key, metrics[key]) for key in _FACTS if key in metrics]
    facts.append(("written", time.strftime("%Y-%m-%d %H:%M")))
    shown = {k: v for k, v in metrics.items() if k not in (*_FACTS, "notes")}
    sections = md.metric_sections(shown, _plots(run_dir))
    sections.append(("How it was measured", md.bullets(metrics.get("notes") or [])))
    errors = [r for r in records if r.get("correct") is False]
    if errors:
        sections.append((f"First errors ({len(errors)} of {len(records)} examples wrong)", md.examples_table(errors)))
    if records:
        sections.append(("Files", "`predictions.jsonl`: one line per example (input, reference, prediction, "
                                  "correct) for error analysis; `eval_metrics.json`: every number above."))
    return md.render(f"Evaluation of {Path(str(metrics.get('model', run_dir))).name}", facts, sections)


def _config_facts(config: dict[str, Any]) -> list[tuple[str, Any]]:
    model, data, train = config.get("model") or {}, config.get("data") or {}, config.get("train") or {}
    built = f"{model.get('arch')} ({model.get('size')}) from scratch" if model.get("arch") else None
    length = f"{train['max_steps']} steps" if train.get("max_steps") else f"{train.get('epochs')} epochs"
    facts = [("command", config.get("command")), ("task", config.get("task")),
             ("model", model.get("name_or_path") or built), ("data", data.get("dataset")),
             ("evaluation data", data.get("eval_dataset")),
             ("schedule", f"lr {train.get('lr')}, batch {train.get('batch_size')}, {length}"),
             ("max_length", train.get("max_length")), ("LoRA", (config.get("lora") or {}).get("enabled"))]
    return [(k, v) for k, v in facts if v not in (None, "")]


def history_table(records: Sequence[dict[str, Any]]) -> str:
    """The evaluations of a training run, one row per evaluation (the last ``_MAX_HISTORY``)."""
    evals = [r for r in records if isinstance(r.get("eval_loss"), (int, float)) or any(k in r for k in _HISTORY[1:])]
    keys = [k for k in _HISTORY if any(k in r for r in evals)]
    if not evals or not keys:
        return ""
    rows = [(r.get("step"), r.get("epoch"), *(r.get(k) for k in keys)) for r in evals[-_MAX_HISTORY:]]
    return md.table(("step", "epoch", *(k.removeprefix("eval_") for k in keys)), rows, [True] * (2 + len(keys)))


def training_report(run_dir: Path, metrics: dict[str, Any], config: dict[str, Any],
                    history: Sequence[dict[str, Any]]) -> str:
    """The markdown of a training run (``llmtune report``'s ``report.md``)."""
    facts = _config_facts(config)
    done = run_dir / "run_complete.json"
    finished = json.loads(done.read_text()).get("finished_at") if done.is_file() else "no (crashed or running)"
    facts.append(("finished", finished))
    sections = md.metric_sections(metrics, _plots(run_dir))
    sections.insert(1, ("Evaluations during training", history_table(history)))
    return md.render(f"Run report: {run_dir.name}", facts, sections)


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def regenerate(run_dir: str | Path) -> tuple[dict[str, Any], list[Path]]:
    """Redraw the plots and rewrite ``report.md`` of a run dir or an evaluation folder.

    Returns:
        The metrics read and the files written.

    Raises:
        ConfigError: The folder holds neither ``metrics.json`` nor ``eval_metrics.json``.
    """
    from llmtune.config.loader import parse_yaml
    from llmtune.rundir import atomic_write_text
    from llmtune.reports.plots import curves_png, read_jsonl

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"run dir not found: {run_dir}; pass the folder a llmtune command wrote")
    evaluation, trained = _read_json(run_dir / EVAL_METRICS), _read_json(run_dir / TRAIN_METRICS)
    if evaluation is None and trained is None:
        raise ConfigError(f"{run_dir} holds neither {TRAIN_METRICS} nor {EVAL_METRICS}: not a finished llmtune run; "
                          "pass the run dir (or its eval/ folder) of a finished run")
    metrics = evaluation if evaluation is not None else trained
    written = classification_plots(metrics, run_dir / "plots")
    log_file = run_dir / "logs" / "metrics.jsonl"
    history = read_jsonl(log_file) if log_file.is_file() else []
    if history:
        written += [p for p in [curves_png(log_file, run_dir / "plots" / "curves.png")] if p is not None]
    if evaluation is not None:
        predictions = run_dir / "predictions.jsonl"
        text = eval_report(run_dir, evaluation, read_jsonl(predictions) if predictions.is_file() else [])
    else:
        config_file = run_dir / "config.yaml"
        config = parse_yaml(config_file.read_text(encoding="utf-8"), str(config_file)) if config_file.is_file() else {}
        text = training_report(run_dir, trained, config if isinstance(config, dict) else {}, history)
    atomic_write_text(run_dir / "report.md", text)
    return metrics, [*written, run_dir / "report.md"]
