"""Stages 1-2: Unicode repair and normalisation (ftfy + unicodedata), HTML to text (resiliparse).

Also the word tokeniser every later stage shares, so length filters, shingles and decontamination
n-grams count the same words.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmtune.config.clean import MarkupConfig, NormalizeConfig

_WORD = re.compile(r"\w+", re.UNICODE)
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
# An opening or closing tag of a real HTML element (not "a < b" or "<3").
_TAG = re.compile(
    r"</?(?:html|head|body|div|span|p|br|a|ul|ol|li|table|tr|td|th|h[1-6]|nav|header|footer|section|article|"
    r"main|script|style|img|meta|link|title|form|input|button|strong|em|b|i)\b[^>]{0,500}>|<!doctype html",
    re.IGNORECASE,
)
_KEEP_CONTROL = {"\n", "\t"}


def words(text: str) -> list[str]:
    """Lower-cased words (runs of letters, digits and underscores) of ``text``."""
    return _WORD.findall(text.lower())


def strip_control(text: str) -> str:
    """Drop control (Cc) and format (Cf) characters except newline and tab; CR/LF become LF."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(ch for ch in text if ch in _KEEP_CONTROL or unicodedata.category(ch) not in ("Cc", "Cf"))


def collapse_whitespace(text: str) -> str:
    """One space between words, no spaces at line ends, at most one blank line in a row, no outer blanks."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def normalize_text(text: str, cfg: NormalizeConfig) -> str:
    """Stage 1: repair mojibake (ftfy), NFKC, drop control characters, tidy whitespace, as ``cfg`` asks."""
    if cfg.fix_mojibake:
        import ftfy

        # normalization=None: NFKC is our own switch; ftfy's default would apply NFC regardless.
        text = ftfy.fix_text(text, normalization=None, uncurl_quotes=cfg.uncurl_quotes)
    if cfg.nfkc:
        text = unicodedata.normalize("NFKC", text)
    if cfg.strip_control:
        text = strip_control(text)
    if cfg.whitespace:
        text = collapse_whitespace(text)
    return text


def is_markup(text: str, min_tags: int) -> bool:
    """True when ``text`` holds at least ``min_tags`` HTML tags (a page rather than prose mentioning one)."""
    count = 0
    for _ in _TAG.finditer(text):
        count += 1
        if count >= min_tags:
            return True
    return False


def markup_to_text(text: str, cfg: MarkupConfig) -> str:
    """Stage 2: the readable text of an HTML document (resiliparse), whitespace tidied.

    ``main_content`` drops navigation, headers, footers and other page furniture.
    """
    from resiliparse.extract.html2text import extract_plain_text

    extracted = extract_plain_text(text, main_content=cfg.main_content, alt_texts=False, links=False)
    return collapse_whitespace(extracted)
