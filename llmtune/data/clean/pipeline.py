"""Run the stages over an input split in shards, store each finished shard, then dedup across shards.

Work layout (inside the run's temporary folder)::

    shards/00003/kept.jsonl    rows that survived every stage of shard 3 (with their input row number)
    shards/00003/dedup.npz     rows fed into dedup, their hashes, MinHash signatures and local verdicts
    shards/00003/stats.json    per-stage statistics; written LAST: a shard with it is finished

A shard is a fixed block of ``clean.shard_rows`` input rows, so shard k holds the same rows however many
workers (``--num-workers``) or machines (``--shard i/N``: shards k with k % N == i) do the work, and a
killed run redoes only unfinished shards. :func:`finish` then drops documents that copy a document of an
earlier shard and writes the cleaned files.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from llmtune.data.clean.dedup import EXACT, NEAR, DedupIndex, dedup_verdict
from llmtune.data.clean.stages import STAGES, Doc, ShardResult, StageStats, clean_shard
from llmtune.dist import log
from llmtune.errors import DataError

if TYPE_CHECKING:
    import datasets

    from llmtune.config.clean import CleanConfig

_STATS = "stats.json"
_EVAL_NGRAMS: frozenset[str] = frozenset()  # set once per worker process by _init_worker


def shard_bounds(n_rows: int, shard_rows: int) -> list[tuple[int, int]]:
    """``[start, end)`` row ranges of the shards of an ``n_rows`` input."""
    return [(start, min(start + shard_rows, n_rows)) for start in range(0, n_rows, shard_rows)]


def shard_dir(work_dir: Path, index: int) -> Path:
    """The folder holding shard ``index``'s intermediate files."""
    return Path(work_dir) / "shards" / f"{index:05d}"


def is_finished(work_dir: Path, index: int) -> bool:
    """True when shard ``index`` was completely written (its stats.json exists)."""
    return (shard_dir(work_dir, index) / _STATS).is_file()


def read_docs(dataset: datasets.Dataset, column: str, start: int, end: int) -> list[Doc]:
    """Rows ``[start, end)`` of ``column`` as ``(row, text)``; missing values become empty texts."""
    values = dataset.select_columns([column])[start:end][column]
    return [(start + i, value if isinstance(value, str) else "") for i, value in enumerate(values)]


def read_meta(dataset: datasets.Dataset, columns: list[str], start: int, end: int) -> dict[int, dict[str, Any]]:
    """Row -> ``{column: value}`` of the ``columns`` kept next to the text (empty dicts without any)."""
    if not columns:
        return {}
    batch = dataset.select_columns(columns)[start:end]
    return {start + i: {name: batch[name][i] for name in columns} for i in range(end - start)}


def save_shard(result: ShardResult, folder: Path, bounds: tuple[int, int], meta: Optional[dict[int, dict]] = None) -> None:
    """Write one shard's files; stats.json goes last (atomically) and marks the shard finished."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    meta = meta or {}
    with open(folder / "kept.jsonl", "w", encoding="utf-8") as fh:
        for row, text in result.kept:
            record = {"row": row, "text": text, "meta": meta.get(row, {})}
            fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    write_removals(result.stats.items(), folder / "removed.jsonl")
    sigs = [s for s in result.dedup_sigs if s is not None]
    np.savez(folder / "dedup.npz", rows=np.array(result.dedup_rows, dtype=np.int64),
             keys=np.array(result.dedup_keys, dtype=np.uint64), status=np.array(result.dedup_status, dtype=np.int8),
             matched=np.array(result.dedup_matched, dtype=np.int64),
             has_sig=np.array([s is not None for s in result.dedup_sigs], dtype=bool),
             sigs=np.stack(sigs) if sigs else np.zeros((0, 0), dtype=np.uint32),
             lengths_in=np.array(result.lengths_in, dtype=np.int64))
    payload = {"rows": list(bounds), "bytes_in": result.bytes_in,
               "stages": {name: s.to_dict() for name, s in result.stats.items()}}
    tmp = folder / f".{_STATS}.tmp"
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, folder / _STATS)


def write_removals(stages: Any, path: Path, mode: str = "w") -> None:
    """Append every logged removal of ``stages`` (``(name, StageStats)`` pairs) to ``path`` as JSON lines."""
    with open(path, mode, encoding="utf-8") as fh:
        for name, stats in stages:
            for row, reason, detail in stats.log:
                fh.write(json.dumps({"row": row, "stage": name, "reason": reason, "detail": detail}) + "\n")


def _init_worker(eval_ngrams: frozenset[str]) -> None:
    global _EVAL_NGRAMS
    _EVAL_NGRAMS = eval_ngrams


def process_shard(dataset: datasets.Dataset, column: str, bounds: tuple[int, int], folder: Path,
                  cfg: CleanConfig) -> int:
    """Clean one shard and save it; returns its input size in bytes (for the MB/s display)."""
    docs = read_docs(dataset, column, *bounds)
    result = clean_shard(docs, cfg, _EVAL_NGRAMS)
    save_shard(result, folder, bounds, read_meta(dataset, cfg.keep_columns, *bounds))
    return result.bytes_in


def run_shards(dataset: datasets.Dataset, column: str, work_dir: Path, cfg: CleanConfig, todo: list[int],
               eval_ngrams: frozenset[str]) -> None:
    """Clean the shards ``todo`` (indices into :func:`shard_bounds`), ``cfg.num_workers`` at a time."""
    bounds = shard_bounds(len(dataset), cfg.shard_rows)
    _init_worker(eval_ngrams)
    # Arrow's size of the text column (text plus offsets): the bar's total, close to the UTF-8 bytes read.
    estimate = int(dataset.data.column(column).nbytes * sum(bounds[k][1] - bounds[k][0] for k in todo) / max(len(dataset), 1))
    with _progress(len(todo), estimate) as advance:
        if cfg.num_workers == 1 or len(todo) == 1:
            for k in todo:
                advance(process_shard(dataset, column, bounds[k], shard_dir(work_dir, k), cfg))
            return
        # fork: workers inherit the loaded libraries; the dataset pickles as a reference to its Arrow files.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(cfg.num_workers, mp_context=context, initializer=_init_worker,
                                 initargs=(eval_ngrams,)) as pool:
            futures = [pool.submit(process_shard, dataset, column, bounds[k], shard_dir(work_dir, k), cfg) for k in todo]
            for future in futures:
                advance(future.result())


class _progress:
    """A rich progress bar with MB/s on a terminal, one log line per shard otherwise."""

    def __init__(self, total: int, total_bytes: int) -> None:
        self.total, self.total_bytes, self.done, self.bytes, self.start = total, total_bytes, 0, 0, time.monotonic()
        self.bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            self.bar = Progress(TextColumn("cleaning"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task("clean", total=self.total_bytes or None)
        return self.advance

    def advance(self, n_bytes: int) -> None:
        self.done, self.bytes = self.done + 1, self.bytes + n_bytes
        if self.bar is not None:
            self.bar.update(self.task, advance=n_bytes)
        else:
            rate = self.bytes / 1e6 / max(time.monotonic() - self.start, 1e-9)
            log(f"clean: shard {self.done}/{self.total} done ({self.bytes / 1e6:.1f} MB, {rate:.2f} MB/s)")

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


@dataclass
class CleanSummary:
    """The merged result of every shard after the cross-shard dedup."""

    stages: dict[str, StageStats]
    files: list[str]
    docs_in: int
    chars_in: int
    bytes_in: int
    lengths_in: list[int]
    lengths_out: list[int]
    clusters: list[dict[str, Any]] = field(default_factory=list)


def finish(work_dir: Path, n_shards: int, cfg: CleanConfig, out_dir: Path) -> CleanSummary:
    """Merge the finished shards: cross-shard dedup, write ``train-KKKKK.<format>`` files into ``out_dir``.

    Raises:
        DataError: Every document was removed (the message says which stage removed how many).
    """
    stages = {name: StageStats() for name in STAGES}
    bytes_in = 0
    for k in range(n_shards):
        data = json.loads((shard_dir(work_dir, k) / _STATS).read_text(encoding="utf-8"))
        bytes_in += data["bytes_in"]
        for name, stage in data["stages"].items():
            stages[name].merge(StageStats.from_dict(stage), cfg.examples)
    removed, edges, lengths_in = _cross_shard_dedup(work_dir, n_shards, cfg)
    files, lengths_out, texts = _write_outputs(work_dir, n_shards, cfg, out_dir, removed, stages, edges)
    _collect_removals(work_dir, n_shards, stages, out_dir / "report" / "removed.jsonl")
    summary = CleanSummary(stages, files, stages["normalize"].docs_in, stages["normalize"].chars_in, bytes_in,
                           lengths_in, lengths_out, clusters=_clusters(edges, texts))
    if not lengths_out:
        raise DataError(f"every document was removed ({removal_summary(stages)}); loosen those stages in the "
                        "recipe or with --set (see docs/data-clean.md)")
    return summary


def _collect_removals(work_dir: Path, n_shards: int, stages: dict[str, StageStats], path: Path) -> None:
    """``removed.jsonl``: every shard's removals, then the cross-shard dedup ones (one line per document)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for k in range(n_shards):
            with open(shard_dir(work_dir, k) / "removed.jsonl", encoding="utf-8") as fh:
                shutil.copyfileobj(fh, out)
    write_removals(stages.items(), path, mode="a")


def removal_summary(stages: dict[str, StageStats]) -> str:
    """``length 40 (too_short 38, too_long 2), language 12 (language_de 12)`` for the stages that removed."""
    parts = []
    for name, stage in stages.items():
        total = sum(stage.removed.values())
        if total:
            reasons = ", ".join(f"{reason} {count}" for reason, count in stage.removed.most_common(3))
            parts.append(f"{name} {total} ({reasons})")
    return ", ".join(parts) or "no stage removed any, but there was no text"


def _cross_shard_dedup(work_dir: Path, n_shards: int, cfg: CleanConfig) -> tuple[dict[int, tuple[str, int]], dict[int, int], list[int]]:
    """Check each shard's survivors against every document earlier shards fed into dedup.

    Returns:
        ``removed`` (row -> (stage, matched row)) for new removals, ``edges`` (every dedup removal:
        row -> matched row, for the cluster report) and the input lengths of all rows.
    """
    import numpy as np

    exact_on, near_on = cfg.exact_dedup.enabled, cfg.near_dedup.enabled
    index = DedupIndex(cfg.near_dedup) if (exact_on or near_on) and n_shards > 1 else None
    removed: dict[int, tuple[str, int]] = {}
    edges: dict[int, int] = {}
    lengths_in: list[int] = []
    for k in range(n_shards):
        data = np.load(shard_dir(work_dir, k) / "dedup.npz")
        lengths_in.extend(int(n) for n in data["lengths_in"])
        sig_at = np.cumsum(data["has_sig"]) - 1
        records = list(zip(data["rows"].tolist(), data["keys"].tolist(), data["status"].tolist(),
                           data["matched"].tolist(), data["has_sig"].tolist(), sig_at.tolist()))
        for row, _key, status, matched, _has, _at in records:
            if status:
                edges[row] = matched
        if index is None:
            continue
        sigs = data["sigs"]
        for row, key, status, _m, has_sig, at in records:
            if status == 0:
                stage, match = dedup_verdict(index, row, key, sigs[at] if has_sig else None, exact_on, near_on)
                if stage is not None:
                    removed[row] = (stage, match)
                    edges[row] = match
        for row, key, status, _m, has_sig, at in records:
            index.add(row, key, sigs[at] if has_sig and status != 1 else None)
    return removed, edges, lengths_in


def _iter_kept(work_dir: Path, k: int) -> Iterator[tuple[int, str, dict[str, Any]]]:
    with open(shard_dir(work_dir, k) / "kept.jsonl", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            yield record["row"], record["text"], record["meta"]


def _write_outputs(work_dir: Path, n_shards: int, cfg: CleanConfig, out_dir: Path, removed: dict[int, tuple[str, int]],
                   stages: dict[str, StageStats], edges: dict[int, int]) -> tuple[list[str], list[int], dict[int, str]]:
    """Write each shard's final rows; count the cross-shard removals into the dedup stages' statistics."""
    roots = {_root(row, edges) for row in edges}
    files, lengths_out, texts = [], [], {}
    gone = {EXACT: [0, 0], NEAR: [0, 0]}
    for k in range(n_shards):
        rows = []
        for row, text, meta in _iter_kept(work_dir, k):
            if row in removed:
                stage, match = removed[row]
                stages[stage].remove("duplicate", row, text, cfg.examples, detail=f"copy of row {match}")
                gone[stage][0] += 1
                gone[stage][1] += len(text)
                continue
            if row in roots:
                texts[row] = text[:200]
            rows.append({"text": text, **meta})
            lengths_out.append(len(text))
        if rows:
            files.append(write_rows(rows, out_dir / f"train-{k:05d}.{cfg.format}", cfg.format))
    _adjust_dedup_stats(stages, gone)
    return files, lengths_out, texts


def _adjust_dedup_stats(stages: dict[str, StageStats], gone: dict[str, list[int]]) -> None:
    exact, near = stages[EXACT], stages[NEAR]
    exact.docs_out -= gone[EXACT][0]
    exact.chars_out -= gone[EXACT][1]
    near.docs_in, near.chars_in = exact.docs_out, exact.chars_out
    near.docs_out -= gone[EXACT][0] + gone[NEAR][0]
    near.chars_out -= gone[EXACT][1] + gone[NEAR][1]


def write_rows(records: list[dict[str, Any]], path: Path, fmt: str) -> str:
    """Write ``records`` (``text`` and any kept columns) as JSON Lines or Parquet; returns the file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        with open(path, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    return path.name


def _root(row: int, edges: dict[int, int]) -> int:
    seen = set()
    while row in edges and row not in seen:
        seen.add(row)
        row = edges[row]
    return row


def _clusters(edges: dict[int, int], texts: dict[int, str], top: int = 5) -> list[dict[str, Any]]:
    """The ``top`` largest duplicate clusters: the kept row, its size (with itself) and a few member rows."""
    members: dict[int, list[int]] = {}
    for row in edges:
        members.setdefault(_root(row, edges), []).append(row)
    ranked = sorted(members.items(), key=lambda item: (-len(item[1]), item[0]))[:top]
    return [{"kept_row": root, "size": len(rows) + 1, "removed_rows": sorted(rows)[:10], "text": texts.get(root, "")}
            for root, rows in ranked]


def finished_shards(work_dir: Path, n_shards: int) -> list[int]:
    """Indices of the shards already finished in ``work_dir``."""
    return [k for k in range(n_shards) if is_finished(work_dir, k)]


def slice_of(n_shards: int, shard: Optional[tuple[int, int]]) -> list[int]:
    """The shards machine ``i`` of ``N`` cleans (k % N == i); all of them without ``--shard``."""
    if shard is None:
        return list(range(n_shards))
    index, count = shard
    return [k for k in range(n_shards) if k % count == index]
