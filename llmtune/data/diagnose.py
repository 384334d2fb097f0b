"""Turn a failed local load into one actionable line.

The ``datasets`` builders fail with ``DatasetGenerationError`` wrapping a pandas or pyarrow error that
rarely names the file, the line or the fix. When a load fails we re-read the offending file ourselves
(only then, so successful loads pay nothing) and say exactly what is wrong where.
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Optional

from llmtune.errors import DataError

_CHUNK = 1 << 20
_TEXT_KINDS = {"csv", "tsv", "json", "text"}
_PANDAS_RAGGED = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def check_not_empty(path: Path, kind: str) -> None:
    """Raise DataError when ``path`` has 0 bytes, or (text formats) only whitespace."""
    if path.stat().st_size == 0:
        raise DataError(f"file is empty: {path}; put some data in it or pass a different file")
    if kind == "parquet":
        return
    with path.open("rb") as handle:
        # Stop at the first non-whitespace chunk: a large real file costs one read.
        while chunk := handle.read(_CHUNK):
            if chunk.strip():
                return
    raise DataError(f"file is empty (only whitespace): {path}; put some data in it or pass a different file")


def first_invalid_utf8(path: Path) -> Optional[tuple[int, int]]:
    """Find the first byte that is not valid UTF-8.

    Args:
        path: File to scan.

    Returns:
        ``(byte_offset, line_number)`` of the first invalid byte (both counted from the file start;
        lines from 1), or None when the whole file is valid UTF-8.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, newlines = 0, 0
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            # Bytes of an incomplete sequence held back from the previous chunk.
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                data = pending + chunk
                bad = offset - len(pending) + exc.start
                return bad, newlines + data[: exc.start].count(b"\n") + 1
            if not chunk:
                return None
            offset += len(chunk)
            newlines += chunk.count(b"\n")


def find_bad_json_line(path: Path) -> Optional[tuple[int, str]]:
    """Locate the first JSON syntax error in a ``.json`` or ``.jsonl`` file.

    Args:
        path: The file (must be valid UTF-8).

    Returns:
        ``(line_number, parser_message)`` for the first syntax error, or None when the file parses
        (as one document or as one document per line).
    """
    text = path.read_text(encoding="utf-8")
    head = text.lstrip()[:1]
    whole_document = path.suffix.lower() == ".json" and (
        head == "[" or (head == "{" and not _first_line_is_object(text))
    )
    if whole_document:
        # One (possibly multi-line) document: the parser's own position is the right one.
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return exc.lineno, exc.msg
        return None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except json.JSONDecodeError as exc:
            return number, exc.msg
    return None


def _first_line_is_object(text: str) -> bool:
    """True when the first non-blank line is a complete JSON value (JSON Lines layout)."""
    for line in text.splitlines():
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError:
                return False
            return True
    return False


def root_message(exc: BaseException) -> str:
    """The innermost cause's message, on one line (the outer datasets wrapper says nothing useful)."""
    seen: set[int] = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def _chain_text(exc: BaseException) -> str:
    parts, seen = [], set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(str(current))
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def check_utf8(path: Path) -> None:
    """Raise the non-UTF-8 DataError for ``path`` if it has an invalid byte."""
    bad = first_invalid_utf8(path)
    if bad is not None:
        raise DataError(
            f"{path} is not valid UTF-8 (first bad byte at offset {bad[0]}, line {bad[1]}); "
            f"re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}"
        )


def diagnose(path: Path, kind: str, exc: BaseException) -> Optional[DataError]:
    """Explain why ``path`` failed to load, or None when this file looks fine.

    Args:
        path: One of the files the failed load read.
        kind: Its format: csv, tsv, json, parquet or text.
        exc: The exception the loader raised (its cause chain is searched for details).

    Returns:
        A one-line DataError naming the file, the position and the fix, or None.
    """
    if kind in _TEXT_KINDS:
        try:
            check_utf8(path)
        except DataError as error:
            return error
    if kind in ("csv", "tsv"):
        return _diagnose_csv(path, kind, exc)
    if kind == "json":
        found = find_bad_json_line(path)
        if found is not None:
            return DataError(
                f"malformed JSON in {path} at line {found[0]}: {found[1]}; fix that line (a .jsonl file "
                "needs one complete JSON object per line, a .json file one array of objects)"
            )
        return None
    if kind == "parquet":
        return DataError(f"{path} is not a readable Parquet file ({root_message(exc)}); re-export it")
    return None


def _diagnose_csv(path: Path, kind: str, exc: BaseException) -> Optional[DataError]:
    match = _PANDAS_RAGGED.search(_chain_text(exc))
    if match is None:
        return None
    expected, line, saw = match.groups()
    hint = "quote fields that contain the delimiter" if kind == "csv" else "remove stray tab characters"
    return DataError(
        f"malformed {kind.upper()} in {path}: line {line} has {saw} fields but the header has {expected}; {hint}"
    )
