"""Run every benchmark in bench/ and print ONE table; also write bench/results.json.

A benchmark is any ``bench/*.py`` module (other than this one, ``common`` and ``_helpers``) that
defines ``run(quick: bool) -> list[Row]``, so a new benchmark needs no registration here.

    .venv/bin/python bench/run_all.py                 # everything (~15 min on 2 cores)
    .venv/bin/python bench/run_all.py --quick         # smoke test of every benchmark (~4 min)
    .venv/bin/python bench/run_all.py --only startup  # some of them
    .venv/bin/python bench/run_all.py --strict        # exit 1 when a target is missed
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from common import BENCH_DIR, Row, exit_code, report, run_safely, say

NOT_BENCHMARKS = {"common", "run_all"}
# Cheap ones first, so a broken setup shows within seconds; unlisted modules run after, by name.
PREFERRED_ORDER = ("startup", "pretrain_throughput", "pretrain_quality", "classification", "generate", "eval",
                   "sft_stops")


def discover() -> dict[str, ModuleType]:
    """Import every benchmark module, in run order."""
    names = sorted(p.stem for p in BENCH_DIR.glob("*.py")
                   if not p.stem.startswith("_") and p.stem not in NOT_BENCHMARKS)
    names.sort(key=lambda n: PREFERRED_ORDER.index(n) if n in PREFERRED_ORDER else len(PREFERRED_ORDER))
    modules = {name: importlib.import_module(name) for name in names}
    return {name: module for name, module in modules.items() if callable(getattr(module, "run", None))}


def main() -> int:
    parser = argparse.ArgumentParser(description="Run llmtune's benchmarks and print one table.")
    parser.add_argument("--quick", action="store_true",
                        help="short runs: checks that everything works, not a measurement")
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
        say(f"running {name}{' (quick)' if args.quick else ''}")
        rows += run_safely(name, lambda m=module: m.run(args.quick))
    report(rows, quick=args.quick)
    return exit_code(rows, args.strict)


if __name__ == "__main__":
    sys.exit(main())
