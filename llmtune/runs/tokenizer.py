"""``llmtune tokenizer train``: stream a text column into a tokenizer trainer and save the result."""

from __future__ import annotations

from typing import Optional

from llmtune.config.schema import RunConfig
from llmtune.runs.common import RunResult, finish_run, is_fresh, output_path, removed_on_bad_input, start_run
from llmtune.dist import log


def run(cfg: RunConfig, family: Optional[str] = None) -> RunResult:
    """Train a tokenizer on ``cfg.data`` and save it (loadable with ``AutoTokenizer``) in the run dir.

    Args:
        cfg: Resolved config (``tokenizer`` section and ``data``).
        family: ``causal`` or ``masked`` special tokens; default: masked for WordPiece, else causal.
    """
    from llmtune.data.loading import load_task_data
    from llmtune.tasks.registry import TASKS
    from llmtune.tokenizer import iter_texts, train_and_report

    family = family or ("masked" if cfg.tokenizer.type == "wordpiece" else "causal")
    default_name = f"tokenizer-{cfg.tokenizer.type}-{cfg.tokenizer.vocab_size}"
    fresh = is_fresh(cfg, output_path(cfg, default_name))
    run_dir = start_run(cfg, default_name=default_name)
    with removed_on_bad_input(run_dir, fresh):
        data = load_task_data(cfg.data, TASKS["lm"].columns, seed=cfg.train.seed)
        for note in data.notes:
            log(note)
        heldout_split = data.validation if data.validation is not None else data.train
        heldout = heldout_split.select(range(min(len(heldout_split), 500)))["text"]
        tok, report = train_and_report(iter_texts(data.train), cfg.tokenizer, family=family, heldout=heldout)
    tok.save_pretrained(str(run_dir))
    metrics = {
        "vocab_size": report.vocab_size,
        "train_seconds": report.train_seconds,
        "train_texts": report.train_texts,
        "train_chars": report.train_chars,
        **{f"heldout_{k}": v for k, v in report.heldout.items()},
    }
    return finish_run(cfg, run_dir, metrics)
