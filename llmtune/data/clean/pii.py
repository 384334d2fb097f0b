"""Stage 7: mask personal data (e-mail addresses, IPv4 addresses, phone numbers) with placeholders.

Regular expressions, deliberately conservative: a phone number needs 7+ digits with separators or a
leading ``+``, so years, prices and plain numbers stay untouched.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmtune.config.clean import PiiConfig

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
IP_ADDRESS = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b")
PHONE = re.compile(r"(?<![\w.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,3}(?![\w.])")


def _is_phone(match: re.Match[str]) -> bool:
    digits = sum(ch.isdigit() for ch in match.group(0))
    return digits >= 7 and (match.group(0).startswith("+") or any(sep in match.group(0) for sep in " .-()"))


def mask_pii(text: str, cfg: PiiConfig) -> tuple[str, int]:
    """Replace the kinds of personal data ``cfg`` enables.

    Returns:
        The masked text and how many spans were replaced.
    """
    count = 0
    if cfg.emails:
        text, n = EMAIL.subn("<EMAIL>", text)
        count += n
    if cfg.ip_addresses:
        text, n = IP_ADDRESS.subn("<IP_ADDRESS>", text)
        count += n
    if cfg.phone_numbers:
        found = 0

        def replace(match: re.Match[str]) -> str:
            nonlocal found
            if _is_phone(match):
                found += 1
                return "<PHONE>"
            return match.group(0)

        text = PHONE.sub(replace, text)
        count += found
    return text, count
