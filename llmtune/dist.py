"""Process rank, logging and main-process-first: what every layer needs, so it sits at the bottom.

Nothing here imports torch or transformers at module level (``accelerate`` only inside
``main_process_first`` when more than one process runs).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator


def log(message: str) -> None:
    """One progress line on stderr (stdout stays clean for piping). Only the main process prints."""
    if is_main_process():
        print(f"[llmtune] {message}", file=sys.stderr, flush=True)


def is_main_process() -> bool:
    """True on rank 0 (or when not distributed)."""
    return os.environ.get("RANK", "0") == "0"


def world_size() -> int:
    """Processes in this run (``WORLD_SIZE`` set by accelerate launch / torchrun; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first; the other ranks wait for it, then run the block themselves.

    Wrap data preparation in it: rank 0 tokenizes and writes the datasets cache (and a trained tokenizer),
    the others then load those instead of computing them again at the same time. One process: no-op.
    If rank 0 fails inside the block, the launcher stops the waiting ranks.
    """
    if world_size() <= 1:
        yield
        return
    from accelerate import PartialState

    # The same state the Trainer sets up later (accelerate launch sets ACCELERATE_USE_CPU for gloo on CPUs).
    cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    with PartialState(cpu=cpu).main_process_first():
        yield
