"""Stage 3: line-level boilerplate removal.

Two rules, each optional: short lines matching cookie/navigation/share phrases (the kind C4 and
Gopher drop), and lines that occur in many documents of the same input shard (site menus, footers,
"Posted by admin"). Repeated lines are counted per input shard, a fixed block of rows, so the result
does not depend on how many workers or machines share the work.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Iterable, Pattern

if TYPE_CHECKING:
    from llmtune.config.clean import BoilerplateConfig

BUILTIN_PATTERNS = (
    r"\bcookies?\b", r"\bjavascript\b", r"\bprivacy policy\b", r"\bterms (of use|of service|and conditions)\b",
    r"\ball rights reserved\b", r"^\W*(copyright|©)", r"\bsign (in|up)\b", r"\blog ?in\b", r"\bsubscribe\b",
    r"\bnewsletter\b", r"\bshare (this|on)\b", r"\b(follow|like) us\b", r"\bclick here\b", r"\bread more\b",
    r"\bskip to (main )?content\b", r"\blorem ipsum\b", r"^\W*(home|menu|search|next|previous|back to top)\W*$",
    r"\b(facebook|twitter|instagram|pinterest|linkedin)\b.*\b(facebook|twitter|instagram|pinterest|linkedin)\b",
)


def compile_patterns(cfg: BoilerplateConfig) -> list[Pattern[str]]:
    """The line patterns ``cfg`` asks for (built-in ones and ``extra_patterns``), case-insensitive."""
    sources = (list(BUILTIN_PATTERNS) if cfg.patterns else []) + list(cfg.extra_patterns)
    return [re.compile(source, re.IGNORECASE) for source in sources]


def line_key(line: str) -> str:
    """How lines are compared when counting repeats: lower case, single spaces."""
    return " ".join(line.lower().split())


def repeated_lines(texts: Iterable[str], cfg: BoilerplateConfig) -> set[str]:
    """Keys of lines found in at least ``cfg.min_repeat_docs`` of ``texts`` (each document counted once)."""
    if not cfg.repeated_lines:
        return set()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update({key for key in map(line_key, text.split("\n")) if len(key) >= cfg.min_repeat_chars})
    return {key for key, count in counts.items() if count >= cfg.min_repeat_docs}


def is_pattern_line(line: str, patterns: list[Pattern[str]], max_words: int) -> bool:
    """True for a short line (at most ``max_words`` words) matching one of ``patterns``."""
    return len(line.split()) <= max_words and any(p.search(line) for p in patterns)


def remove_boilerplate(
    text: str, patterns: list[Pattern[str]], repeated: set[str], cfg: BoilerplateConfig
) -> tuple[str, int]:
    """Drop boilerplate lines from ``text``.

    Returns:
        The text without those lines (blank-line runs collapsed) and how many lines were dropped.
    """
    kept, dropped = [], 0
    for line in text.split("\n"):
        if line.strip() and (
            line_key(line) in repeated or is_pattern_line(line, patterns, cfg.max_pattern_line_words)
        ):
            dropped += 1
            continue
        kept.append(line)
    if not dropped:
        return text, 0
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip(), dropped
