"""The stages, in their fixed order, applied to one shard of documents, with per-stage statistics.

Order (``STAGES``): normalize, markup, boilerplate, length, language, quality, pii, decontaminate,
exact_dedup, near_dedup. Text-changing stages come first so every filter sees the text that will be
written; the cheap filters run before language ID; dedup runs last, on the documents that will be kept
otherwise, so the copy that survives a cluster is one that passed every other stage.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from llmtune.data.clean import boilerplate, filters, normalize, pii
from llmtune.data.clean.decontam import contaminated
from llmtune.data.clean.dedup import EXACT, NEAR, DedupIndex, dedup_verdict, exact_key, signature

if TYPE_CHECKING:
    from llmtune.config.clean import CleanConfig

STAGES = ("normalize", "markup", "boilerplate", "length", "language", "quality", "pii", "decontaminate",
          EXACT, NEAR)
SNIPPET_CHARS = 300
Doc = tuple[int, str]  # (input row number, text)


@dataclass
class StageStats:
    """What one stage did: documents and characters in and out, removals by reason, a few examples."""

    enabled: bool = True
    docs_in: int = 0
    docs_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    modified: int = 0
    removed: Counter = field(default_factory=Counter)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    log: list[tuple[int, str, Optional[str]]] = field(default_factory=list, repr=False)  # (row, reason, detail)

    def remove(self, reason: str, row: int, text: str, limit: int, detail: Optional[str] = None) -> None:
        """Count one removal, log it and keep it as an example while fewer than ``limit`` are kept for ``reason``."""
        self.removed[reason] += 1
        self.log.append((row, reason, detail))
        shown = self.examples.setdefault(reason, [])
        if len(shown) < limit:
            example = {"row": row, "text": text[:SNIPPET_CHARS]}
            if detail:
                example["detail"] = detail
            shown.append(example)

    def merge(self, other: "StageStats", limit: int) -> None:
        """Add ``other``'s counts (examples up to ``limit`` per reason)."""
        self.enabled = self.enabled and other.enabled
        for name in ("docs_in", "docs_out", "chars_in", "chars_out", "modified"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.removed.update(other.removed)
        for reason, shown in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(shown[: max(limit - len(mine), 0)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``removed`` sorted by count)."""
        return {"enabled": self.enabled, "docs_in": self.docs_in, "docs_out": self.docs_out,
                "chars_in": self.chars_in, "chars_out": self.chars_out, "modified": self.modified,
                "removed": dict(self.removed.most_common()), "examples": self.examples}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StageStats":
        """Inverse of :meth:`to_dict`."""
        return cls(data["enabled"], data["docs_in"], data["docs_out"], data["chars_in"], data["chars_out"],
                   data["modified"], Counter(data["removed"]), dict(data["examples"]))


@dataclass
class ShardResult:
    """One shard after every stage: survivors, dedup records for the final cross-shard step, statistics."""

    kept: list[Doc]
    stats: dict[str, StageStats]
    lengths_in: list[int]
    bytes_in: int = 0
    dedup_rows: list[int] = field(default_factory=list)
    dedup_keys: list[int] = field(default_factory=list)
    dedup_sigs: list[Any] = field(default_factory=list)
    dedup_status: list[int] = field(default_factory=list)  # 0 kept, 1 exact copy, 2 near copy
    dedup_matched: list[int] = field(default_factory=list)  # the row it copies, -1 when kept


def _run_stage(stats: StageStats, docs: list[Doc], step: Callable[[Doc], tuple[Optional[str], Optional[str]]],
               limit: int) -> list[Doc]:
    """Apply ``step`` to every doc: it returns ``(new_text, None)`` to keep, ``(None, reason)`` to remove."""
    stats.docs_in, stats.chars_in = len(docs), sum(len(t) for _, t in docs)
    out: list[Doc] = []
    for row, text in docs:
        new_text, reason = step((row, text))
        if reason is not None or not new_text:
            stats.remove(reason or "empty", row, text, limit)
            continue
        stats.modified += new_text != text
        out.append((row, new_text))
    stats.docs_out, stats.chars_out = len(out), sum(len(t) for _, t in out)
    return out


def _skip(stats: StageStats, docs: list[Doc]) -> list[Doc]:
    stats.enabled = False
    stats.docs_in = stats.docs_out = len(docs)
    stats.chars_in = stats.chars_out = sum(len(t) for _, t in docs)
    return docs


def _text_stages(cfg: CleanConfig, eval_ngrams: frozenset[str]) -> list[tuple[str, bool, Any]]:
    """(name, enabled, step factory) of stages 1-8; a factory gets the shard's docs and returns the step."""
    patterns = boilerplate.compile_patterns(cfg.boilerplate)
    bp, n = cfg.boilerplate, cfg.decontaminate.ngram

    def boilerplate_step(docs: list[Doc]) -> Callable[[Doc], tuple[Optional[str], Optional[str]]]:
        repeated = boilerplate.repeated_lines((t for _, t in docs), bp)
        return lambda d: (boilerplate.remove_boilerplate(d[1], patterns, repeated, bp)[0], None)

    def keep_unless(check: Callable[[str], Optional[str]]) -> Any:
        return lambda docs: lambda d: (d[1], check(d[1]))

    def decontam(text: str) -> Optional[str]:
        return "shares_ngram" if contaminated(text, eval_ngrams, n) else None

    markup = cfg.markup
    return [
        ("normalize", cfg.normalize.enabled, lambda docs: lambda d: (normalize.normalize_text(d[1], cfg.normalize), None)),
        ("markup", markup.enabled, lambda docs: lambda d: (
            normalize.markup_to_text(d[1], markup) if normalize.is_markup(d[1], markup.min_tags) else d[1], None)),
        ("boilerplate", bp.enabled and (bp.patterns or bp.repeated_lines or bool(bp.extra_patterns)), boilerplate_step),
        ("length", cfg.length.enabled, keep_unless(lambda t: filters.length_reason(t, cfg.length))),
        ("language", cfg.language.enabled, keep_unless(lambda t: filters.language_reason(t, cfg.language))),
        ("quality", cfg.quality.enabled, keep_unless(lambda t: filters.quality_reason(t, cfg.quality))),
        ("pii", cfg.pii.enabled, lambda docs: lambda d: (pii.mask_pii(d[1], cfg.pii)[0], None)),
        ("decontaminate", bool(eval_ngrams), keep_unless(decontam)),
    ]


def clean_shard(docs: list[Doc], cfg: CleanConfig, eval_ngrams: frozenset[str] = frozenset()) -> ShardResult:
    """Run every stage over one shard (dedup only against earlier documents of this shard).

    Args:
        docs: ``(row, text)`` in input order.
        cfg: The ``clean`` config section.
        eval_ngrams: Evaluation n-grams for decontamination (empty: stage off).
    """
    stats = {name: StageStats() for name in STAGES}
    result = ShardResult(kept=[], stats=stats, lengths_in=[len(t) for _, t in docs],
                         bytes_in=sum(len(t.encode("utf-8")) for _, t in docs))
    for name, enabled, make_step in _text_stages(cfg, eval_ngrams):
        docs = _run_stage(stats[name], docs, make_step(docs), cfg.examples) if enabled else _skip(stats[name], docs)
    result.kept = _local_dedup(docs, cfg, result)
    return result


def _local_dedup(docs: list[Doc], cfg: CleanConfig, result: ShardResult) -> list[Doc]:
    """Stages 9-10 within the shard; every document fed in is recorded for the cross-shard step."""
    exact_on, near_on = cfg.exact_dedup.enabled, cfg.near_dedup.enabled
    s_exact, s_near = result.stats[EXACT], result.stats[NEAR]
    if not (exact_on or near_on):
        _skip(s_exact, docs)
        _skip(s_near, docs)
        return docs
    s_exact.enabled, s_near.enabled = exact_on, near_on
    s_exact.docs_in, s_exact.chars_in = len(docs), sum(len(t) for _, t in docs)
    index, kept = DedupIndex(cfg.near_dedup), []
    for row, text in docs:
        key = exact_key(text)
        sig = signature(text, cfg.near_dedup) if near_on else None
        stage, match = dedup_verdict(index, row, key, sig, exact_on, near_on)
        status = {None: 0, EXACT: 1, NEAR: 2}[stage]
        if stage is not None:
            result.stats[stage].remove("duplicate", row, text, cfg.examples, detail=f"copy of row {match}")
        else:
            kept.append((row, text))
        index.add(row, key, None if stage == EXACT else sig)
        for name, value in (("rows", row), ("keys", key), ("sigs", sig), ("status", status),
                            ("matched", -1 if match is None else match)):
            getattr(result, f"dedup_{name}").append(value)
    exact_removed = s_exact.removed["duplicate"]
    near_removed_chars = sum(len(t) for (r, t), st in zip(docs, result.dedup_status) if st == 2)
    exact_removed_chars = sum(len(t) for (r, t), st in zip(docs, result.dedup_status) if st == 1)
    s_exact.docs_out, s_exact.chars_out = len(docs) - exact_removed, s_exact.chars_in - exact_removed_chars
    s_near.docs_in, s_near.chars_in = s_exact.docs_out, s_exact.chars_out
    s_near.docs_out, s_near.chars_out = len(kept), s_near.chars_in - near_removed_chars
    return kept
