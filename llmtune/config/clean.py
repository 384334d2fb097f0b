"""The ``clean`` config section: what ``llmtune data clean`` does to a corpus, stage by stage.

Each stage has its own sub-section with ``enabled`` and its thresholds, so a recipe or ``--set
clean.near_dedup.threshold=0.7`` tunes one stage without touching the others. The stages always run in
the order documented in ``docs/data-clean.md`` (and ``llmtune.data.clean.pipeline.STAGES``).
"""

from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_shard(value: Optional[str]) -> Optional[tuple[int, int]]:
    """Parse ``--shard i/N`` into ``(i, N)`` with ``0 <= i < N`` (None stays None).

    Raises:
        ValueError: The text is not ``i/N`` or ``i`` is out of range.
    """
    if value is None:
        return None
    match = _SHARD.match(str(value))
    if not match:
        raise ValueError(f"'{value}' is not a slice; write i/N, e.g. 0/4 for the first of 4 machines")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise ValueError(f"slice {index}/{count} does not exist; i counts from 0 to N-1")
    return index, count


class NormalizeConfig(_Stage):
    """Stage 1: Unicode repair (ftfy) and normalisation."""

    enabled: bool = Field(True, description="Run this stage.")
    fix_mojibake: bool = Field(True, description="Repair mojibake and broken escapes with ftfy.fix_text.")
    uncurl_quotes: bool = Field(
        False, description="Also straighten curly quotes (ftfy). Off: typographic quotes are real text, and a model "
        "trained without them scores worse on text that has them (bench/clean_pretrain.py).")
    nfkc: bool = Field(True, description="Apply Unicode NFKC normalisation.")
    strip_control: bool = Field(True, description="Remove control and format characters (tabs and newlines kept).")
    whitespace: bool = Field(True, description="Collapse runs of spaces, trim lines, at most one blank line in a row.")


class MarkupConfig(_Stage):
    """Stage 2: HTML to text (resiliparse) for documents that look like markup."""

    enabled: bool = Field(True, description="Run this stage.")
    main_content: bool = Field(True, description="Keep the main content only (drop navigation, headers, footers).")
    min_tags: int = Field(2, ge=1, description="A document counts as markup when it holds at least this many HTML tags.")


class BoilerplateConfig(_Stage):
    """Stage 3: line-level boilerplate removal."""

    enabled: bool = Field(True, description="Run this stage.")
    patterns: bool = Field(True, description="Drop short lines matching the built-in cookie/navigation/share phrases.")
    extra_patterns: list[str] = Field(default_factory=list, description="More regular expressions; a matching line is dropped.")
    max_pattern_line_words: int = Field(
        20, ge=1, description="Only lines of at most this many words are dropped for matching a pattern."
    )
    repeated_lines: bool = Field(True, description="Drop lines that occur in many documents of the same input shard.")
    min_repeat_docs: int = Field(
        5, ge=2, description="A line found in at least this many documents of one input shard is boilerplate."
    )
    min_repeat_chars: int = Field(
        10, ge=1, description="Lines shorter than this are never counted as repeated (dates, numbers, '...')."
    )


class LengthConfig(_Stage):
    """Stage 4: document length filters."""

    enabled: bool = Field(True, description="Run this stage.")
    min_words: int = Field(20, ge=0, description="Drop documents with fewer words.")
    max_words: int = Field(200_000, gt=0, description="Drop documents with more words.")
    min_chars: int = Field(0, ge=0, description="Drop documents with fewer characters.")


class LanguageConfig(_Stage):
    """Stage 5: language filter (py3langid; its model ships inside the package)."""

    enabled: bool = Field(True, description="Run this stage.")
    languages: list[str] = Field(
        default_factory=lambda: ["en"], description="ISO 639-1 codes to keep (py3langid knows 97 languages)."
    )
    min_score: float = Field(0.5, ge=0, le=1, description="Drop documents whose best kept language scores below this.")

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one language, or set clean.language.enabled=false")
        return [code.strip().lower() for code in value]


class QualityConfig(_Stage):
    """Stage 6: Gopher/C4-style quality heuristics (each a reason of its own in the report)."""

    enabled: bool = Field(True, description="Run this stage.")
    max_symbol_word_ratio: float = Field(0.1, ge=0, description="Most '#' and '...' symbols per word.")
    min_mean_word_length: float = Field(3.0, ge=0, description="Shortest mean word length (characters).")
    max_mean_word_length: float = Field(10.0, gt=0, description="Longest mean word length (characters).")
    max_ellipsis_lines: float = Field(0.3, ge=0, le=1, description="Largest share of lines ending in an ellipsis.")
    max_bullet_lines: float = Field(0.9, ge=0, le=1, description="Largest share of lines starting with a bullet.")
    min_alpha_words: float = Field(0.8, ge=0, le=1, description="Smallest share of words holding a letter.")
    min_stop_words: int = Field(2, ge=0, description="Fewest English stop words (the, be, to, of, and, that, have, with).")
    max_duplicate_lines: float = Field(0.3, ge=0, le=1, description="Largest share of lines that repeat within the document.")
    max_top_ngram: float = Field(
        0.2, ge=0, le=1, description="Largest share of characters in the most frequent word 2-gram (Gopher: 0.20)."
    )
    max_duplicate_ngrams: float = Field(
        0.15, ge=0, le=1, description="Largest share of characters in repeated word 5-grams (Gopher: 0.15)."
    )

    @model_validator(mode="after")
    def _check_word_lengths(self) -> "QualityConfig":
        if self.min_mean_word_length >= self.max_mean_word_length:
            raise ValueError("min_mean_word_length must be below max_mean_word_length")
        return self


class PiiConfig(_Stage):
    """Stage 7: mask personal data (off by default)."""

    enabled: bool = Field(False, description="Run this stage.")
    emails: bool = Field(True, description="Replace e-mail addresses with <EMAIL>.")
    ip_addresses: bool = Field(True, description="Replace IPv4 addresses with <IP_ADDRESS>.")
    phone_numbers: bool = Field(True, description="Replace phone numbers (7+ digits, with separators) with <PHONE>.")


class DecontaminateConfig(_Stage):
    """Stage 8: drop training documents that share a long word n-gram with evaluation data."""

    files: list[str] = Field(
        default_factory=list, description="Evaluation files (any source the data layer reads); empty: stage off."
    )
    ngram: int = Field(13, ge=3, le=100, description="Words in a shared n-gram that count as contamination.")


class ExactDedupConfig(_Stage):
    """Stage 9: exact duplicates (hash of the lower-cased, whitespace-collapsed text)."""

    enabled: bool = Field(True, description="Run this stage.")


class NearDedupConfig(_Stage):
    """Stage 10: near duplicates with MinHash + LSH (datasketch) on word shingles."""

    enabled: bool = Field(True, description="Run this stage.")
    threshold: float = Field(
        0.8, gt=0, lt=1, description="Jaccard similarity above which a later document is dropped (MinHash estimate, "
                        "accepted down to 1.645 standard deviations below, so pairs at the threshold are caught)."
    )
    ngram: int = Field(5, ge=1, le=50, description="Words per shingle.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (more: better estimates, slower).")
    seed: int = Field(1, description="MinHash seed.")


class CleanConfig(_Stage):
    """``llmtune data clean``: stages (in their fixed order), sharding and output."""

    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig, description="1. Unicode repair and normalisation.")
    markup: MarkupConfig = Field(default_factory=MarkupConfig, description="2. HTML to text.")
    boilerplate: BoilerplateConfig = Field(default_factory=BoilerplateConfig, description="3. Boilerplate lines.")
    length: LengthConfig = Field(default_factory=LengthConfig, description="4. Length filter.")
    language: LanguageConfig = Field(default_factory=LanguageConfig, description="5. Language filter.")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="6. Quality heuristics.")
    pii: PiiConfig = Field(default_factory=PiiConfig, description="7. PII masking.")
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig, description="8. Decontamination.")
    exact_dedup: ExactDedupConfig = Field(default_factory=ExactDedupConfig, description="9. Exact dedup.")
    near_dedup: NearDedupConfig = Field(default_factory=NearDedupConfig, description="10. Near dedup.")
    format: Literal["jsonl", "parquet"] = Field("jsonl", description="Format of the cleaned shards.")
    keep_columns: list[str] = Field(
        default_factory=list, description="Input columns written next to `text` in the output (e.g. url, id)."
    )
    shard_rows: int = Field(
        10_000, gt=0, description="Input rows per shard: the unit of work, of resuming and of repeated-line counts."
    )
    num_workers: int = Field(1, ge=1, le=256, description="Processes cleaning shards in parallel on this machine.")
    shard: Optional[str] = Field(
        None, description="i/N: clean only slice i of N (machine i of N); a run without it finishes (global dedup)."
    )
    examples: int = Field(3, ge=0, le=100, description="Removed documents shown per reason in the report.")

    @field_validator("shard")
    @classmethod
    def _check_shard(cls, value: Optional[str]) -> Optional[str]:
        parse_shard(value)
        return value
