"""Stages 4-6: length, language (py3langid, offline) and Gopher/C4-style quality filters.

Each filter returns the reason a document is removed (a short key that the report counts), or None
to keep it. The thresholds come from the ``clean`` config section.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Optional

from llmtune.data.clean.normalize import words

if TYPE_CHECKING:
    from llmtune.config.clean import LanguageConfig, LengthConfig, QualityConfig

#: Gopher's stop words (Rae et al. 2021): a real English document holds some of them.
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
_BULLETS = ("•", "-", "*", "‣", "●", "◦", "–")
_ELLIPSES = ("...", "…")
_LANGUAGE_CHARS = 5000  # language ID on the first 5,000 characters: more does not change the verdict


def length_reason(text: str, cfg: LengthConfig) -> Optional[str]:
    """``too_short`` / ``too_long`` / ``too_few_chars``, or None when the length is within bounds."""
    n_words = len(words(text))
    if n_words < cfg.min_words:
        return "too_short"
    if n_words > cfg.max_words:
        return "too_long"
    if len(text) < cfg.min_chars:
        return "too_few_chars"
    return None


@lru_cache(maxsize=1)
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    # The model file ships inside the py3langid wheel: nothing is downloaded.
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str, float]:
    """The most likely language (ISO 639-1) of ``text`` and its probability."""
    lang, prob = _identifier().classify(text[:_LANGUAGE_CHARS])
    return str(lang), float(prob)


def language_reason(text: str, cfg: LanguageConfig) -> Optional[str]:
    """``language_XX`` when the text is in another language, ``low_language_score`` when unsure, else None."""
    lang, prob = detect_language(text)
    if lang not in cfg.languages:
        return f"language_{lang}"
    if prob < cfg.min_score:
        return "low_language_score"
    return None


def quality_stats(text: str) -> dict[str, float]:
    """The quantities the quality rules compare with their thresholds (Gopher's definitions)."""
    raw_words = text.split()
    tokens = words(text)
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    n_raw, n_lines = max(len(raw_words), 1), max(len(lines), 1)
    symbols = text.count("#") + text.count("...") + text.count("…")
    return {
        "symbol_word_ratio": symbols / n_raw,
        "mean_word_length": sum(map(len, tokens)) / max(len(tokens), 1),
        "ellipsis_lines": sum(line.endswith(_ELLIPSES) for line in lines) / n_lines,
        "bullet_lines": sum(line.startswith(_BULLETS) for line in lines) / n_lines,
        "alpha_words": sum(any(ch.isalpha() for ch in w) for w in raw_words) / n_raw,
        "stop_words": float(sum(token in STOP_WORDS for token in tokens)),
        "duplicate_lines": (len(lines) - len(set(lines))) / n_lines,
        "top_2gram": top_ngram_fraction(tokens, 2),
        "duplicate_5grams": duplicate_ngram_fraction(tokens, 5),
    }


def top_ngram_fraction(tokens: list[str], n: int) -> float:
    """Share of word characters taken by the most frequent word n-gram (0 when none repeats)."""
    total = sum(map(len, tokens))
    if len(tokens) < n or total == 0:
        return 0.0
    counts = Counter(tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1))
    gram, count = counts.most_common(1)[0]
    return 0.0 if count < 2 else count * sum(map(len, gram)) / total


def duplicate_ngram_fraction(tokens: list[str], n: int) -> float:
    """Share of word characters inside word n-grams that occur more than once (each word counted once)."""
    total = sum(map(len, tokens))
    if len(tokens) < n or total == 0:
        return 0.0
    grams = [tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(tokens)
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i: i + n] = [True] * n
    return sum(len(t) for t, c in zip(tokens, covered) if c) / total


def quality_reason(text: str, cfg: QualityConfig) -> Optional[str]:
    """The first quality rule ``text`` breaks (its stat name), or None when it passes them all."""
    stats = quality_stats(text)
    checks = (
        ("symbol_word_ratio", stats["symbol_word_ratio"] > cfg.max_symbol_word_ratio),
        ("mean_word_length", not cfg.min_mean_word_length <= stats["mean_word_length"] <= cfg.max_mean_word_length),
        ("ellipsis_lines", stats["ellipsis_lines"] > cfg.max_ellipsis_lines),
        ("bullet_lines", stats["bullet_lines"] > cfg.max_bullet_lines),
        ("alpha_words", stats["alpha_words"] < cfg.min_alpha_words),
        ("stop_words", stats["stop_words"] < cfg.min_stop_words),
        ("duplicate_lines", stats["duplicate_lines"] > cfg.max_duplicate_lines),
        ("top_2gram", stats["top_2gram"] > cfg.max_top_ngram),
        ("duplicate_5grams", stats["duplicate_5grams"] > cfg.max_duplicate_ngrams),
    )
    return next((name for name, failed in checks if failed), None)
