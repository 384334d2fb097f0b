"""What a finished sweep leaves in its folder: the results table (terminal and ``sweep.md``), ``best.yaml``
(a recipe ``--recipe`` accepts) and Optuna's history / importance / parallel-coordinate plots as PNG."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

from llmtune.config import dump_config
from llmtune.dist import log
from llmtune.pipelines.sweep_spec import SweepSpec

PLOTS = {
    "history.png": "plot_optimization_history",
    "importance.png": "plot_param_importances",
    "parallel.png": "plot_parallel_coordinate",
}


def write_outputs(study: Any, spec: SweepSpec) -> Any:
    """Print the table and write ``sweep.md``, ``best.yaml`` and ``plots/*.png`` into the sweep folder."""
    out = Path(spec.out_dir)
    rows = result_rows(study, spec)
    best = best_trial(study)
    print_table(rows, spec)
    (out / "sweep.md").write_text(markdown(rows, spec, best, study), encoding="utf-8")
    if best is not None:
        (out / "best.yaml").write_text(best_recipe(spec, best), encoding="utf-8")
        log(f"best: trial {best.number}, {spec.metric} {best.value:.4g}; recipe in {out / 'best.yaml'}")
    else:
        log("no trial completed: no best.yaml (see the notes in sweep.md)")
    for name in write_plots(study, out / "plots"):
        log(f"plot: {out / 'plots' / name}")
    return study


def best_trial(study: Any) -> Optional[Any]:
    """The best completed trial, or None when none completed."""
    from optuna.trial import TrialState

    return study.best_trial if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else None


def result_rows(study: Any, spec: SweepSpec) -> list[dict[str, str]]:
    """One row per trial in number order: trial, state, the metric, each param, seconds, note."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        value = t.value if t.value is not None else (_last_reported(t) if t.state.name == "PRUNED" else None)
        row = {"trial": str(t.number), "state": t.state.name.lower(),
               spec.metric: "" if value is None else f"{value:.4g}"}
        row.update({p.path: _fmt(t.params.get(p.path)) for p in spec.params})
        row["seconds"] = f"{t.user_attrs['seconds']:.0f}" if "seconds" in t.user_attrs else ""
        row["note"] = t.user_attrs.get("note", "")
        rows.append(row)
    return rows


def _last_reported(trial: Any) -> Optional[float]:
    values = trial.intermediate_values
    return values[max(values)] if values else None


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def print_table(rows: list[dict[str, str]], spec: SweepSpec) -> None:
    """The results as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"llmtune sweep: {spec.metric} ({spec.direction})")
    for column in (rows[0] if rows else {"trial": ""}):
        table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=28 if column == "note" else None)
    for row in rows:
        table.add_row(*row.values())  # the whole note is in sweep.md
    Console().print(table)


def markdown(rows: list[dict[str, str]], spec: SweepSpec, best: Optional[Any], study: Any) -> str:
    """``sweep.md``: what was searched, the best trial and the table."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    lines = ["# llmtune sweep", ""]
    if spec.command:
        lines += ["```", " ".join(spec.command), "```", ""]
    lines += [f"- metric: `{spec.metric}` ({spec.direction}); storage: `{spec.storage}`",
              "- searched: " + ", ".join(f"`{p.path}` {_space(p)}" for p in spec.params),
              "- trials: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))]
    saved = pruner_savings(study)
    if saved is not None:
        lines.append(f"- pruner: stopped trials used {saved:.0%} less time than running them in full would have "
                     "(estimate: a full trial takes the mean time of the completed ones)")
    if best is not None:
        lines.append(f"- best: trial {best.number}, `{spec.metric}` = {best.value:.4g}: `best.yaml` "
                     f"(`llmtune finetune --recipe {Path(spec.out_dir) / 'best.yaml'} -o runs/best`)")
    lines += ["", "| " + " | ".join(rows[0]) + " |" if rows else "", "|" + "---|" * len(rows[0]) if rows else ""]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row.values()) + " |" for row in rows]
    return "\n".join(lines).rstrip() + "\n"


def _space(p: Any) -> str:
    if p.kind == "choice":
        return "choice " + ",".join(map(str, p.choices))
    return f"{p.kind} {p.low:g}..{p.high:g}"


def pruner_savings(study: Any) -> Optional[float]:
    """Share of trial time the pruner saved: pruned trials' time vs the mean completed trial's, in all.

    None without both a completed and a pruned trial with recorded times.
    """
    trials = study.get_trials(deepcopy=False)
    full = [t.user_attrs["seconds"] for t in trials if t.state.name == "COMPLETE" and "seconds" in t.user_attrs]
    pruned = [t.user_attrs["seconds"] for t in trials if t.state.name == "PRUNED" and "seconds" in t.user_attrs]
    if not full or not pruned:
        return None
    mean_full = sum(full) / len(full)
    spent = sum(full) + sum(pruned)
    would = sum(full) + mean_full * len(pruned)
    return max(0.0, 1 - spent / would)


def best_recipe(spec: SweepSpec, best: Any) -> str:
    """The best trial's config as a finetune recipe (no output dir), headed by how it was found."""
    cfg = spec.trial_config(dict(best.params))
    text = dump_config(cfg)
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
    header = [f"# Best of `llmtune sweep` in {spec.out_dir}: trial {best.number}, {spec.metric} = {best.value:.4g}",
              f"# ({shown}).", f"# llmtune finetune --recipe {Path(spec.out_dir) / 'best.yaml'} -o runs/best"]
    return "\n".join(header) + "\n" + text


def write_plots(study: Any, folder: Path) -> list[str]:
    """Optuna's matplotlib plots as PNG; a plot the study cannot draw yet (too few trials) is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, function in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning on every call
                axes = getattr(optuna_plots, function)(study)
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            figure.savefig(folder / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
            written.append(name)
        except Exception as exc:  # noqa: BLE001 - e.g. importance needs two completed trials
            log(f"plot {name} skipped: {' '.join(str(exc).split()) or type(exc).__name__}")
    return written
