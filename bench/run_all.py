"""Run every benchmark in bench/ and print ONE table; also write bench/results.json.

A benchmark is any ``bench/*.py`` module (other than this one, ``common`` and ``_helpers``) that
defines ``run(quick: bool) -> list[Row]``, so a new benchmark needs no registration here.

    .venv/bin/python bench/run_all.py                 # small default sizes (~19 min on 2 quiet cores; `make bench`)
    .venv/bin/python bench/run_all.py --full          # each benchmark's own full size (~1.5 h)
    .venv/bin/python bench/run_all.py --quick         # smoke test of every benchmark (~4 min)
    .venv/bin/python bench/run_all.py --only startup  # some of them
    .venv/bin/python bench/run_all.py --strict        # exit 1 when a target is missed

The default sizes come from ``SMALL`` below: the cheap benchmarks run at full size, the slow ones smaller
(see bench/README.md for what each measures then and the time each takes).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

from common import BENCH_DIR, Row, exit_code, report, run_safely, say

NOT_BENCHMARKS = {"common", "run_all"}
# Cheap ones first, so a broken setup shows within seconds; unlisted modules run after, by name.
PREFERRED_ORDER = ("startup", "pretrain_throughput", "pretrain_quality", "classification", "generate", "serve",
                   "eval", "sft_stops")


@dataclass(frozen=True)
class Size:
    """How ``run_all`` runs one benchmark by default.

    Attributes:
        quick: Passed as ``run(quick)``.
        kwargs: Extra keyword arguments of the module's ``run``.
        constants: Module constants replaced for the run (restored after); a callable value gets the
            module and returns the value (for the module's own dataclasses).
    """

    quick: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)


# `make bench` sizes: ~19 min in all on 2 quiet cores (estimates from the run dirs' wall_seconds); modules
# not listed run at full size: startup ~0.3 min, generate ~2 min, eval ~1.5 min, serve ~1.5 min (an estimate, not
# yet timed on quiet cores).
SMALL: dict[str, Size] = {
    # 2 alternating repeats x 16 timed steps instead of 5 (~1.3 min instead of ~3.3).
    "pretrain_throughput": Size(constants={"FULL": lambda m: m.Plan(repeats=2, steps=16)}),
    # llmtune's 240 s run only (~4.2 min): the target (<= 2.45 bits/char) is absolute; --full adds the
    # char-level baseline for another 240 s.
    "pretrain_quality": Size(kwargs={"with_baseline": False}),
    # 640 training rows, 1 seed, 3 interleaved 20-step throughput pairs (~5 min; full: 6,000 rows x 3 seeds, ~19 min).
    "classification": Size(quick=True),
    # 100 questions, one epoch each way (~3 min; full: 1,500 questions, ~15 min: the baseline pads to 384).
    "qa": Size(quick=True, constants={"QUICK_ROWS": 100}),
    # The tiny Llama pre-trained 60 s instead of 90 s before SFT (~2.5 min).
    "sft_stops": Size(constants={"PRETRAIN_BUDGET": "60s"}),
    # MiniLM fine-tuned on 1,500 SUBJ rows, 500 test rows, 2 interleaved eval rounds (full: 4,000 / 1,000 / 3).
    "compress": Size(constants={"TRAIN_ROWS": 1500, "TEST_ROWS": 500, "REPEATS": 2,
                                "LM_FULL": lambda m: m.LmSize(**{**vars(m.LM_FULL), "budget": "4m", "rounds": 2})}),
    # 1,024 training rows, 400 evaluation rows, LM teacher 4 min + 2 x 60 s students (full: ~80 min).
    "distill_prune": Size(quick=True),
    # The same untrained ~317M Llama base (built once, then reused), 2 LoRA steps and 4 eval rows per run (full: 4 / 8).
    "qlora_memory": Size(constants={"FULL": lambda m: m.Plan(**{**vars(m.FULL), "finetune_steps": 2, "eval_rows": 4})}),
    # Two DPO candidates compared on the dev data (the recipe and DPO + SFT loss) instead of all sixteen.
    "dpo_quality": Size(constants={
        "CANDIDATES": lambda m: tuple(c for c in m.CANDIDATES if c[0] in ("recipe", "dpo + sft"))}),
}


def discover() -> dict[str, ModuleType]:
    """Import every benchmark module, in run order."""
    names = sorted(p.stem for p in BENCH_DIR.glob("*.py")
                   if not p.stem.startswith("_") and p.stem not in NOT_BENCHMARKS)
    names.sort(key=lambda n: PREFERRED_ORDER.index(n) if n in PREFERRED_ORDER else len(PREFERRED_ORDER))
    modules = {name: importlib.import_module(name) for name in names}
    return {name: module for name, module in modules.items() if callable(getattr(module, "run", None))}


def sized_run(module: ModuleType, size: Size) -> Callable[[], list[Row]]:
    """``module.run`` at ``size``, with its constants swapped in for the call only."""

    def call() -> list[Row]:
        missing = [name for name in size.constants if not hasattr(module, name)]
        if missing:  # a renamed constant must not silently run the full size
            raise AttributeError(f"run_all.SMALL names {', '.join(missing)}, which {module.__name__} lacks")
        saved = {name: getattr(module, name) for name in size.constants}
        try:
            for name, value in size.constants.items():
                setattr(module, name, value(module) if callable(value) else value)
            return module.run(size.quick, **size.kwargs)
        finally:
            for name, value in saved.items():
                setattr(module, name, value)

    return call


def main() -> int:
    parser = argparse.ArgumentParser(description="Run llmtune's benchmarks and print one table.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short runs: checks that everything works, not a measurement")
    mode.add_argument("--full", action="store_true", help="every benchmark at its own full size (~1.5 h on 2 cores)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmark modules")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any target is missed")
    args = parser.parse_args()
    modules = discover()
    unknown = set(args.only or ()) - set(modules)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(modules)}")
    rows: list[Row] = []
    for name, module in modules.items():
        if args.only and name not in args.only:
            continue
        size = Size(quick=True) if args.quick else Size() if args.full else SMALL.get(name, Size())
        label = "quick" if args.quick else "full" if args.full or name not in SMALL else "small"
        say(f"running {name} ({label})")
        rows += run_safely(name, sized_run(module, size))
    report(rows, quick=args.quick)
    return exit_code(rows, args.strict)


if __name__ == "__main__":
    sys.exit(main())
