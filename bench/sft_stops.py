"""SFT stopping: after instruction tuning, does greedy generation end with eos (the model stops)?

Runs llmtune as a user would (subprocesses), then generates in-process:

1. pre-train a tiny Llama on the builtin text (``llmtune pretrain --recipe pretrain/llama-tiny --time-budget
   90s``; reused from ``bench/_work/sft_stops`` when a finished one is there);
2. instruction-tune it on ``builtin:instructions`` (alpaca format, loss on responses, eos after each)
   with ``llmtune finetune --recipe generation/sft-tiny-cpu``;
3. for every validation prompt (100), greedy-generate up to 64 new tokens from the fine-tuned model
   and count the generations that end with eos.

The baseline is the same generation from the pre-trained model before fine-tuning. Target: >= 95 % of
the generations stop. Stopping alone could be learned as "say nothing", so two informational rows
show how much the answers say: the exact-match rate against the reference outputs and the mean
length of the generated answers.

Run alone: ``.venv/bin/python bench/sft_stops.py [--fresh] [--set train.lr=3e-3 ...]`` (``--set`` items
go to the fine-tuning run; ``--fresh`` pre-trains again).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from common import CpuWatch, Row, Target, contention_note, llmtune_argv, report, say, wait_for_quiet, work_dir

NAME = "sft_stops"
TARGET = 0.95
NEW_TOKENS = 64
PRETRAIN_BUDGET, QUICK_PRETRAIN_BUDGET = "90s", "30s"


@dataclass
class Generations:
    """What one model did with the validation prompts."""

    stopped: float  # fraction of generations ending with eos within NEW_TOKENS
    exact: float  # fraction whose text equals the reference output
    mean_tokens: float  # mean generated tokens (eos excluded)


def llmtune(args: Sequence[str], log_path: Path) -> float:
    """Run one llmtune command (output to ``log_path``); returns the wall seconds."""
    argv = [*llmtune_argv(), *args]
    say(f"llmtune: {shlex.join(argv)}  (log: {log_path})")
    start = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log_path.read_text(encoding="utf-8").strip().splitlines()[-3:]
        raise RuntimeError(f"llmtune {args[0]} exited {proc.returncode}: {' | '.join(tail)}")
    return time.monotonic() - start


def pretrained(work: Path, budget: str, fresh: bool) -> Path:
    """The tiny pre-trained Llama (trained now unless a finished one is there)."""
    out = work / "llama-tiny"
    if fresh or not (out / "run_complete.json").is_file():
        llmtune(["pretrain", "--recipe", "pretrain/llama-tiny", "--time-budget", budget, "--output-dir", str(out),
                 "--overwrite"], work / "pretrain.log")
    return out


def generate_all(model_dir: Path, rows: list[dict]) -> Generations:
    """Greedy generations for every row's alpaca prompt, as the fine-tuning run rendered it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from llmtune.decoding import stop_ids
    from llmtune.engine.samples import generate_greedy
    from llmtune.tasks.chat_formats import prompt_text
    from llmtune.tasks.generation import special_prefix

    hf_logging.disable_progress_bar()  # stderr holds progress lines only
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    stops, prefix = stop_ids(model, tok), special_prefix(tok)
    stopped = exact = tokens = 0
    for i, row in enumerate(rows):
        prompt = prefix + tok(prompt_text("alpaca", row, tok, i + 1), add_special_tokens=False)["input_ids"]
        new = generate_greedy(model, prompt, NEW_TOKENS, tok.pad_token_id)
        ended = bool(new) and new[-1] in stops
        answer = tok.decode(new[:-1] if ended else new, skip_special_tokens=True)
        stopped += ended
        exact += ended and answer.strip() == row["output"].strip()
        tokens += len(new) - ended
    n = max(len(rows), 1)
    return Generations(stopped / n, exact / n, tokens / n)


def run(quick: bool, *, fresh: bool = False, sets: Sequence[str] = ()) -> list[Row]:
    """Pre-train (or reuse), fine-tune, generate; the ``run_all`` entry point."""
    from llmtune.data.builtin import __file__ as builtin_init

    work = work_dir(NAME)
    rows = [json.loads(line) for line in
            (Path(builtin_init).parent / "instructions" / "validation.jsonl").read_text().splitlines() if line.strip()]
    wait_for_quiet()
    with CpuWatch() as watch:
        base = pretrained(work, QUICK_PRETRAIN_BUDGET if quick else PRETRAIN_BUDGET, fresh)
        sft = work / "sft"
        extra = ["--max-steps", "20"] if quick else []
        wall = llmtune(["finetune", "--recipe", "generation/sft-tiny-cpu", "--model", str(base), "--output-dir",
                        str(sft), "--overwrite", *extra, *[a for s in sets for a in ("--set", s)]], work / "sft.log")
        say("generating for the validation prompts")
        after, before = generate_all(sft, rows), generate_all(base, rows)
    metrics = json.loads((sft / "metrics.json").read_text(encoding="utf-8"))
    settings = ("--set " + " --set ".join(sets) + "; " if sets else "") + \
        f"eval_loss {metrics['eval_loss']:.3f}, fine-tuning {wall:.0f}s wall"
    load = contention_note([watch.share])
    note = (f"{len(rows)} builtin:instructions validation prompts, greedy, {NEW_TOKENS} new tokens; tiny Llama "
            f"pre-trained {QUICK_PRETRAIN_BUDGET if quick else PRETRAIN_BUDGET} on builtin:text, then "
            f"recipe generation/sft-tiny-cpu ({settings}); baseline = the pre-trained model" + (f"; {load}" if load else ""))
    return [
        Row(NAME, "generations ending with eos", after.stopped, before.stopped, "fraction", Target(">=", TARGET), note),
        Row(NAME, "exact-match answers", after.exact, before.exact, "fraction"),
        Row(NAME, "mean answer length", after.mean_tokens, before.mean_tokens, "tokens"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="pre-train again even if a finished model is there")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for the fine-tuning run (repeatable), e.g. --set train.lr=3e-3")
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test, not a measurement)")
    args = parser.parse_args()
    report(run(args.quick, fresh=args.fresh, sets=args.sets), quick=args.quick)


if __name__ == "__main__":
    main()
