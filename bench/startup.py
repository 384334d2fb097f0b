"""CLI start-up: wall time of ``llmtune --help`` and ``llmtune recipes list`` (target < 1 s each).

Heavy libraries (torch, transformers, datasets ...) must be imported lazily for these to stay fast.
The baseline is a bare ``python -c pass`` from the same interpreter: the floor no CLI can beat.
Each command runs once to warm the file cache, then ``repeats`` times; the median counts.

Run alone: ``.venv/bin/python bench/startup.py [--quick]``.
"""

from __future__ import annotations

import argparse
import sys

from common import CpuWatch, Row, Target, contention_note, llmtune_argv, median, report, time_command

NAME = "startup"
COMMANDS = (("--help",), ("recipes", "list"))
TARGET_S = 1.0


def run(quick: bool) -> list[Row]:
    """Time each command and the bare interpreter; one row per command."""
    repeats = 3 if quick else 7
    with CpuWatch() as watch:
        floor = median(time_command([sys.executable, "-c", "pass"], repeats))
        timings = {args: median(time_command([*llmtune_argv(), *args], repeats)) for args in COMMANDS}
    load = contention_note([watch.share])
    note = f"median of {repeats} runs after a warm-up run; baseline = python -c pass" + (f"; {load}" if load else "")
    return [Row(NAME, f"wall time: llmtune {' '.join(args)}", seconds, floor, "s", Target("<", TARGET_S), note)
            for args, seconds in timings.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    report(run(args.quick), quick=args.quick)


if __name__ == "__main__":
    main()
