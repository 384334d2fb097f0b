"""Load raw data from wherever the user points: a file, a folder, a glob, ``builtin:NAME`` or a hub id.

Everything comes back as a ``datasets.DatasetDict`` keyed by split name. Local files go through the
``datasets`` packaged builders (csv, json, parquet, text) so the result caches and fingerprints like
any hub dataset; every failure becomes a one-line ``DataError`` that names the file and the fix.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from llmtune.data import diagnose
from llmtune.errors import DataError

if TYPE_CHECKING:
    import datasets

#: File extension -> format. ``.json`` and ``.jsonl`` share one reader, so a folder may mix them.
EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".txt": "text",
}
#: Words in a file name that place it in a split (``dev.csv``, ``train-00001.parquet``, ``imdb_test.jsonl``).
SPLIT_WORDS: dict[str, str] = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}
BUILTIN_PREFIX = "builtin:"
_OTHER_FILE_SUFFIXES = {
    ".xlsx", ".xls", ".arrow", ".feather", ".gz", ".zip", ".bz2", ".xz", ".zst", ".tar", ".pkl", ".pickle",
    ".h5", ".hdf5", ".xml", ".html", ".md", ".yaml", ".yml", ".npy", ".npz",
}
_GLOB_CHARS = re.compile(r"[*?\[]")
_BUILDER = {"csv": ("csv", {}), "tsv": ("csv", {"sep": "\t"}), "json": ("json", {}), "parquet": ("parquet", {}),
            "text": ("text", {})}


def load_source(spec: str, split: Optional[str] = None) -> datasets.DatasetDict:
    """Load a dataset from a path, folder, glob, ``builtin:NAME`` or hub id (``name`` / ``name:config``).

    Args:
        spec: What the user passed to ``--dataset`` / ``--eval-dataset``.
        split: Keep only this split (the result then holds just that one); None keeps all.

    Returns:
        The dataset's splits. A single file becomes the ``train`` split; files in a folder or glob
        named ``train.*`` / ``validation.*`` (``valid``, ``val``, ``dev``) / ``test.*`` become those splits.

    Raises:
        DataError: The source is missing, empty, malformed, not UTF-8, of an unsupported type, the
            hub is out of reach, or ``split`` does not exist.
    """
    spec = spec.strip()
    if not spec:
        raise DataError("no dataset given; pass --dataset with a file, folder, glob, hub id or builtin:NAME")
    if spec.startswith(BUILTIN_PREFIX):
        from llmtune.data.builtin import builtin_dir

        groups = _group_files(_data_files(builtin_dir(spec[len(BUILTIN_PREFIX):])), spec)
        loaded = _load_local(groups)
    else:
        loaded = _load_path_or_hub(spec)
    return loaded if split is None else _only_split(loaded, split, spec)


def select_split(
    dataset_dict: datasets.DatasetDict, split: str, spec: str, option: str = "--split"
) -> datasets.Dataset:
    """Return one split, or raise a DataError listing the splits that exist.

    Args:
        dataset_dict: Result of :func:`load_source`.
        split: The split asked for.
        spec: The source as the user wrote it (for the message).
        option: The flag that chooses this split (named in the message).
    """
    if split not in dataset_dict:
        available = ", ".join(dataset_dict) or "none"
        raise DataError(f"split '{split}' not found in {spec}; available splits: {available}. Pass {option} NAME")
    return dataset_dict[split]


def looks_like_path(spec: str) -> bool:
    """True when ``spec`` is meant as a file system path rather than a hub id."""
    if spec.startswith(("./", "../", "/", "~", ".\\")) or _GLOB_CHARS.search(spec):
        return True
    suffix = Path(spec).suffix.lower()
    # A supported extension marks a file even without a slash (``reviews.csv``); other file-like
    # suffixes count only with a slash, and only well-known ones, since hub ids may contain dots.
    has_slash = "/" in spec or "\\" in spec
    return suffix in EXTENSIONS or (has_slash and suffix in _OTHER_FILE_SUFFIXES)


def _only_split(loaded: datasets.DatasetDict, split: str, spec: str) -> datasets.DatasetDict:
    import datasets

    return datasets.DatasetDict({split: select_split(loaded, split, spec)})


def _load_path_or_hub(spec: str) -> datasets.DatasetDict:
    path = Path(spec).expanduser()
    if path.is_file():
        return _load_local({"train": [path]})
    if path.is_dir():
        return _load_local(_group_files(_data_files(path), spec))
    if _GLOB_CHARS.search(spec):
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True) if Path(p).is_file())
        if not matches:
            raise DataError(f"no files match {spec}; check the pattern (quote it so the shell does not expand it)")
        return _load_local(_group_files(matches, spec))
    if looks_like_path(spec):
        raise DataError(f"file not found: {spec}; check the path (relative paths start from {Path.cwd()})")
    return _load_hub(spec)


def _data_files(folder: Path) -> list[Path]:
    """Files of supported types directly inside ``folder`` (hidden files and READMEs skipped)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    supported = [p for p in files if p.suffix.lower() in EXTENSIONS]
    if not supported:
        found = ", ".join(p.name for p in files[:5]) or "nothing"
        raise DataError(
            f"no data files in {folder} (found: {found}); supported types: {', '.join(EXTENSIONS)}"
        )
    return supported


def _split_of(path: Path) -> Optional[str]:
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    words = re.split(r"[-_.\s]+", stem.lower())
    for word in (stem.lower(), words[0], words[-1]):
        if word in SPLIT_WORDS:
            return SPLIT_WORDS[word]
    return None


def _group_files(files: list[Path], spec: str) -> dict[str, list[Path]]:
    """Assign files to splits by name; with no split names at all, every file is training data."""
    named = {path: _split_of(path) for path in files}
    if not any(named.values()):
        return {"train": list(files)}
    stray = [path.name for path, split in named.items() if split is None]
    if stray:
        raise DataError(
            f"cannot tell which split {', '.join(stray)} in {spec} belongs to; name files train.*, "
            "validation.* or test.*, or move the others out"
        )
    groups: dict[str, list[Path]] = {}
    for path, split in named.items():
        groups.setdefault(split, []).append(path)  # type: ignore[arg-type]
    return groups


def _kind_of(groups: dict[str, list[Path]]) -> str:
    kinds = set()
    for path in (p for paths in groups.values() for p in paths):
        kind = EXTENSIONS.get(path.suffix.lower())
        if kind is None:
            raise DataError(
                f"unsupported file type '{path.suffix or path.name}' ({path}); supported: {', '.join(EXTENSIONS)}"
            )
        kinds.add(kind)
    if len(kinds) > 1:
        raise DataError(
            f"files of different types ({', '.join(sorted(kinds))}) cannot be loaded together; "
            "convert them to one format or pass them separately (--dataset / --eval-dataset)"
        )
    return kinds.pop()


def _load_local(groups: dict[str, list[Path]]) -> datasets.DatasetDict:
    kind = _kind_of(groups)
    for paths in groups.values():
        for path in paths:
            diagnose.check_not_empty(path, kind)
            if kind == "json":
                # The json builder stores invalid UTF-8 without complaint and fails at first read.
                diagnose.check_utf8(path)
    datasets = _import_datasets_for_local_loads()
    builder, kwargs = _BUILDER[kind]
    data_files = {split: [str(p) for p in paths] for split, paths in groups.items()}
    # The builders log a raw "Failed to read file" line before raising; we explain failures ourselves.
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        # Local files load in seconds: datasets' per-split progress bars would only clutter the output.
        with datasets_progress(False):
            loaded = datasets.load_dataset(builder, data_files=data_files, **kwargs)
            if kind == "text":
                # One row per non-empty line: blank lines separate paragraphs, they are not examples.
                loaded = loaded.filter(lambda batch: [bool(t.strip()) for t in batch["text"]], batched=True)
    except Exception as exc:  # the builders wrap pandas/pyarrow errors; explain them instead
        raise _explain_failure(groups, kind, exc) from exc
    finally:
        datasets.logging.set_verbosity(verbosity)
    return loaded


def _import_datasets_for_local_loads():  # noqa: ANN202 - returns the datasets module
    # Each packaged-builder load otherwise pings the hub to count downloads (a 3 s timeout offline).
    # datasets reads the variable at import time, so set both the variable and the parsed value.
    os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")
    import datasets

    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    return datasets


def _explain_failure(groups: dict[str, list[Path]], kind: str, exc: Exception) -> DataError:
    for path in (p for paths in groups.values() for p in paths):
        error = diagnose.diagnose(path, kind, exc)
        if error is not None:
            return error
    names = ", ".join(str(p) for paths in groups.values() for p in paths)
    if "corresponds to no data" in diagnose.root_message(exc):
        # datasets refuses a split with no rows (e.g. a CSV with only a header line).
        return DataError(f"{names} has no rows (only a header?); add rows or pass other data")
    return DataError(
        f"could not read {names} as {kind}: {diagnose.root_message(exc)}; every row needs the same "
        "columns with the same types"
    )


@contextmanager
def _offline_if_asked() -> Iterator[None]:
    """Make datasets honour offline variables set after it was imported (else it retries for ~25 s)."""
    import datasets

    from llmtune.hub import hub_offline

    saved = datasets.config.HF_HUB_OFFLINE
    if hub_offline():
        datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = saved


def _load_hub(spec: str) -> datasets.DatasetDict:
    from llmtune.hub import hub_offline, require_hub, unreachable_error

    name, _, config = spec.partition(":")
    require_hub(name, "dataset")
    import datasets

    try:
        with _offline_if_asked():
            loaded = datasets.load_dataset(name, config or None)
    except Exception as exc:  # map the many hub/network failures onto one actionable line
        if hub_offline() or isinstance(exc, (ConnectionError, TimeoutError)):
            raise unreachable_error(name, "dataset") from exc
        if type(exc).__name__ in ("DatasetNotFoundError", "FileNotFoundError", "RepositoryNotFoundError"):
            raise DataError(
                f"dataset '{name}' was not found on the Hugging Face Hub (or is private); check the id, "
                "or pass a local file, folder or builtin:NAME"
            ) from exc
        raise DataError(f"could not load dataset '{spec}' from the hub: {diagnose.root_message(exc)}") from exc
    if not isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


PROGRESS_ROWS = 10_000  # tokenizing fewer rows takes about a second: no progress bar


@contextmanager
def datasets_progress(show: bool) -> Iterator[None]:
    """Hide datasets' progress bars inside the block unless ``show`` (restored after).

    Packing a few thousand rows takes well under a second: a bar would only flash by.
    """
    import datasets

    hide = not show and datasets.is_progress_bar_enabled()
    if hide:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if hide:
            datasets.enable_progress_bars()
