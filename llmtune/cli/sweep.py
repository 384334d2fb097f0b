"""``llmtune sweep``: hyper-parameter search over finetune runs (Optuna TPE + median pruner)."""

import importlib.util
import sys
from typing import Annotated, Optional

import typer

from llmtune.cli import _options as o
from llmtune.cli._options import FLAG_PATHS
from llmtune.errors import ConfigError

HELP = ("Search hyper-parameters: each trial is a finetune run (TPE sampler, median pruner on the evaluations), "
        "then a results table, sweep.md, best.yaml (a recipe) and plots.")
EXAMPLES = (
    "Examples:\n\n"
    "  llmtune sweep --recipe classification/default -m runs/bert -d train.csv --param train.lr=loguniform:1e-5:1e-3 "
    "--param train.batch_size=choice:16,32 --trials 16 --metric eval_accuracy -o runs/sweep\n\n"
    "  llmtune sweep ... --param model.dropout=uniform:0:0.2 --time-budget 30m   (no trial starts after 30 min)\n\n"
    "  llmtune sweep ... --workers 2   (two processes share the study in runs/sweep/study.db; rerun to resume)\n\n"
    "  llmtune sweep ... --storage postgresql://user@host/db   (workers on several machines share one study)\n\n"
    "  llmtune finetune --recipe runs/sweep/best.yaml -o runs/best   (train the winner)\n\n"
    "Spaces: loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH, choice:A,B,C on any config path --set accepts."
)

# Sweep flags that set the base config, by the parameter name FLAG_PATHS knows them as.
_CONFIG_FLAGS = ("task", "model", "dataset", "eval_dataset", "max_samples")


def sweep(
    task: Annotated[Optional[o.TaskChoice], typer.Option("--task", "-t", help="Task of every trial.")] = None,
    recipe: o.Recipe = None,
    model: o.Model = None,
    dataset: o.Dataset = None,
    eval_dataset: o.EvalDataset = None,
    max_samples: o.MaxSamples = None,
    param: Annotated[Optional[list[str]], typer.Option(
        "--param", "-p", help="PATH=loguniform:A:B | uniform:A:B | int:A:B | choice:A,B,C (repeatable).")] = None,
    trials: Annotated[int, typer.Option("--trials", help="Trials in the study in all (a resumed one counts its own).")] = 10,
    metric: Annotated[Optional[str], typer.Option(
        "--metric", help="Evaluation metric to optimise (default: accuracy, QA f1, generation loss).")] = None,
    direction: Annotated[Optional[str], typer.Option(
        "--direction", help="maximize | minimize (default: minimize for loss, perplexity, bits; else maximize).")] = None,
    sweep_time_budget: Annotated[Optional[str], typer.Option(
        "--time-budget", help="No trial starts after this (240s, 30m, 2h); running trials finish.")] = None,
    storage: Annotated[Optional[str], typer.Option(
        "--storage", help="Optuna database URL (default: sqlite:///OUT/study.db); rerun to resume.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes working on the study at once.")] = 1,
    sweep_dir: Annotated[str, typer.Option(
        "--output-dir", "-o", help="Sweep folder: trial-NNN run dirs, sweep.md, best.yaml, plots/.")] = "runs/sweep",
    set_: o.Set = None,
) -> None:
    params = dict(locals())
    if importlib.util.find_spec("optuna") is None:
        raise ConfigError("llmtune sweep needs optuna, which is not installed; pip install 'llmtune[track]'")
    from llmtune.pipelines.sweep_spec import build_spec

    flags = {FLAG_PATHS[name]: getattr(params[name], "value", params[name]) for name in _CONFIG_FLAGS
             if params[name] is not None}
    spec = build_spec(recipe, flags, set_ or [], param or [], trials=trials, metric=metric, direction=direction,
                      out_dir=sweep_dir, storage=storage, workers=workers, time_budget=sweep_time_budget)
    spec.command = ["llmtune", *sys.argv[1:]] if sys.argv[1:2] == ["sweep"] else []
    from llmtune.pipelines.sweep import run_sweep  # imports transformers: only once the input is checked

    run_sweep(spec)
