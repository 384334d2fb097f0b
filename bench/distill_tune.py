"""Choose ``distill.temperature`` / ``distill.alpha`` on a dev split carved from the TRAINING rows (never test).

For one set of ``../shared/datasets``: a seeded, stratified 15 % of ``train.csv`` becomes the dev split, the
rest the tuning-train split (both written under ``bench/_work/distill_tune/SET/``). On them, with the flags
``bench/distill_prune.py`` uses (``SHARED``): the MiniLM-L6 teacher (cached), the 2-layer student on the
labels alone, and the same student distilled at each ``T:alpha`` of ``--grid``, all the same steps. Prints
one dev-accuracy line per run (stdout), so the chosen defaults can be read off without touching test.csv.

A grid item ``T:alpha:copies:mask`` adds a transfer set (``distill.augment=copies``, ``distill.augment_mask=mask``:
masked copies of each tuning-train row, KL term only). Every distilled run makes exactly the labels-only run's
optimizer steps (``--max-steps``), so a transfer set means fewer passes over the original rows, not more steps.

``--distill-set KEY=VALUE`` (repeatable) changes a setting of the distilled runs only, e.g.
``train.batch_size=64`` (twice the rows per step, so a transfer set costs the original rows no passes), or
``distill.transfer_data=FILE`` (another transfer set). ``--student FOLDER`` replaces the 2-layer student cut from
the MiniLM (e.g. one pre-trained here by ``llmtune pretrain``), ``--student-set KEY=VALUE`` changes a setting of
both students' runs (e.g. ``train.freeze_embeddings=false``); both go into the run names, so runs are cached apart.
The dev split is carved with seed 0 whatever ``--seed`` says: ``--seed`` changes the teacher's and the students'
training (initialisation of the head, order of the rows), not the split.

    .venv/bin/python bench/distill_tune.py --set cr [--grid 4:0.9,2:0.5:2:0.2] [--student-epochs 3] [--transfer]
        [--distill-set KEY=VALUE] [--student FOLDER] [--student-set KEY=VALUE] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from pathlib import Path

from common import minilm_path, run_llmtune, say, work_dir
from distill_prune import (DATASETS, SHARED, STUDENT_LAYERS, cached_run, lower_layers_student, steps_of,
                           transfer_file)

DEV_SHARE = 0.15


def carve_dev(name: str, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Split ``train.csv`` of set ``name`` into tuning-train and dev CSVs (stratified by label, seeded)."""
    with (DATASETS / name / "train.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_label: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    rng, train, dev = random.Random(seed), [], []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        cut = round(DEV_SHARE * len(group))
        dev += group[:cut]
        train += group[cut:]
    rng.shuffle(train)
    paths = folder / "train.csv", folder / "dev.csv"
    for path, part in zip(paths, (train, dev)):
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows({"text": r["text"], "label": r["label"]} for r in part)
    return paths


def _tag(setting: str) -> str:
    """A ``KEY=VALUE`` setting as a run-name part (a path value by its file name)."""
    key, _, value = setting.partition("=")
    return key + Path(value).name


def _set_flags(settings: list[str]) -> list[str]:
    """``--set KEY=VALUE`` for each setting."""
    return [flag for kv in settings for flag in ("--set", kv)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, help="a classification set of ../shared/datasets")
    parser.add_argument("--grid", default="4:0.9,2:0.9,4:0.5,2:0.5",
                        help="comma-separated T:alpha or T:alpha:copies:mask (a transfer set)")
    parser.add_argument("--teacher-epochs", type=float, default=2)
    parser.add_argument("--student-epochs", type=float, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transfer", action="store_true",
                        help="add the set's unlabelled transfer texts (distill_prune.TRANSFER) to every distilled run")
    parser.add_argument("--distill-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of every distilled run only (e.g. train.batch_size=64); repeatable")
    parser.add_argument("--student", help="student folder (default: the MiniLM's lowest layers)")
    parser.add_argument("--student-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of both student runs (labels-only and distilled); repeatable")
    args = parser.parse_args()
    root = work_dir("distill_tune", args.set)
    train, dev = carve_dev(args.set, root)
    common = ["-d", str(train), "--eval-dataset", str(dev), *SHARED, "--seed", str(args.seed), "--overwrite"]
    say(f"{args.set}: teacher on the tuning-train split")
    teacher = cached_run(["finetune", "-t", "classification", "-m", minilm_path(), *common,
                          "--epochs", str(args.teacher_epochs), "-o", str(root / "teacher")], root / "teacher", False)
    print(f"{args.set} dev  teacher                acc {teacher['eval_accuracy']:.4f}", flush=True)
    student = Path(args.student) if args.student else \
        lower_layers_student(minilm_path(), STUDENT_LAYERS, root / "student-init")
    epochs = ["--epochs", str(args.student_epochs), *_set_flags(args.student_set)]
    tag = f"e{args.student_epochs:g}" + (f"-{student.name}" if args.student else "") + \
        "".join(f"-{_tag(kv)}" for kv in args.student_set)
    alone = cached_run(["finetune", "-t", "classification", "-m", str(student), *common, *epochs,
                        "-o", str(root / f"labels-{tag}")], root / f"labels-{tag}", False)
    print(f"{args.set} dev  labels-only {tag:>8}   acc {alone['eval_accuracy']:.4f}", flush=True)
    steps = steps_of(root / f"labels-{tag}")
    transfer = ["--transfer-data", str(transfer_file(args.set, root))] if args.transfer else []
    for item in args.grid.split(","):
        temperature, alpha, *augment = item.split(":")
        copies, mask = augment if augment else ("0", "0.2")
        name = f"kd-T{temperature}-a{alpha}" + (f"-aug{copies}-m{mask}" if copies != "0" else "") + \
            ("-transfer" if transfer else "") + "".join(f"-{_tag(kv)}" for kv in args.distill_set)
        out = root / f"{name}-{tag}"
        m = run_llmtune(["distill", "--teacher", str(root / "teacher"), "--student", str(student), "-t",
                         "classification", *common, *epochs, "--max-steps", str(steps), "--temperature", temperature,
                         "--alpha", alpha, "--set", f"distill.augment={copies}", "--set", f"distill.augment_mask={mask}",
                         *transfer, *_set_flags(args.distill_set), "-o", str(out)], out)
        print(f"{args.set} dev  distilled T={temperature} a={alpha} copies={copies} mask={mask} "
              f"{'transfer ' if transfer else ''}{' '.join(args.distill_set)} {tag}  "
              f"acc {m['eval_accuracy']:.4f}  gain {100 * (m['eval_accuracy'] - alone['eval_accuracy']):+.1f}  "
              f"kd share {m.get('distill_kd_share', 0):.2f}  steps {steps_of(out)}/{steps}  wall {m['wall_seconds']:.0f}s",
              flush=True)


if __name__ == "__main__":
    main()
