"""``llmtune data clean``: config -> shards cleaned (resumable) -> cross-shard dedup -> output folder.

Everything is written under ``<output>.partial/`` first and renamed to the output folder when complete,
so a folder at the output path is always a finished corpus. A killed run (or another machine's
``--shard i/N``) leaves finished shards there; the next run with the same settings continues from them.

Output layout::

    OUT/train-00000.jsonl ...       cleaned documents, one ``text`` column (or .parquet)
    OUT/report/clean_report.json    per-stage counts, removal reasons, examples, duplicate clusters
    OUT/report/removed.jsonl        one line per removed document: row, stage, reason (and the row it copies)
    OUT/report/report.md            the same for people, with report/lengths.png
    OUT/report/config.yaml          the resolved config

The reports sit in a sub-folder so ``llmtune pretrain --dataset OUT`` and ``load_dataset(OUT)`` see only
the data files.
"""

from __future__ import annotations

import glob
import json
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from llmtune.config.schema import RunConfig
from llmtune.dist import log
from llmtune.errors import ConfigError, DataError
from llmtune.runs.common import RunResult

_PLAN = "plan.json"
_SLICES = "slices.json"  # written by every --shard i/N run: the final step then cleans no shard itself


def run(cfg: RunConfig) -> RunResult:
    """Clean ``cfg.data.dataset`` into ``cfg.train.output_dir`` (see the module docstring).

    Returns:
        The output folder and the headline numbers; for ``--shard i/N`` the partial folder and the
        slice's progress (the corpus is written by a run without ``--shard``).
    """
    from llmtune.config.clean import parse_shard
    from llmtune.data.clean import require_libraries
    from llmtune.data.clean.decontam import load_eval_ngrams
    from llmtune.data.clean.pipeline import finished_shards, run_shards, shard_bounds, slice_of

    require_libraries()
    started = time.monotonic()
    spec = cfg.data.dataset or ""
    out = Path(cfg.train.output_dir or "runs/clean").expanduser()
    work = out.with_name(out.name + ".partial")
    check_output(out, spec, cfg.train.overwrite)
    eval_ngrams = load_eval_ngrams(cfg.clean.decontaminate.files, cfg.clean.decontaminate.ngram)
    dataset, column = load_input(cfg)
    n_shards = len(shard_bounds(len(dataset), cfg.clean.shard_rows))
    prepare_work_dir(work, plan(cfg, len(dataset), column), cfg.train.overwrite)
    done = set(finished_shards(work, n_shards))
    shard = parse_shard(cfg.clean.shard)
    if shard is None:
        check_slices_finished(work, n_shards, cfg.clean.shard_rows, len(dataset), done)
    else:
        (work / _SLICES).write_text(json.dumps({"count": shard[1]}), encoding="utf-8")
    todo = [k for k in slice_of(n_shards, shard) if k not in done]
    if done:
        log(f"clean: resuming: {len(done)} of {n_shards} shards already finished in {work}")
    run_shards(dataset, column, work, cfg.clean, todo, eval_ngrams)
    finished = finished_shards(work, n_shards)
    if cfg.clean.shard is not None:
        log(f"clean: slice {cfg.clean.shard} done; {len(finished)} of {n_shards} shards finished. Run the same "
            "command without --shard to finish (cross-shard dedup and writing)")
        return RunResult(work, {"shards_finished": len(finished), "shards_total": n_shards})
    return RunResult(out, complete(cfg, work, out, n_shards, spec, started))


def check_slices_finished(work: Path, n_shards: int, shard_rows: int, n_rows: int, done: set[int]) -> None:
    """Before the final step of a ``--shard i/N`` run, check that every slice has finished its shards.

    A folder that no ``--shard`` run touched (a single run, or its resumption) passes: the final step
    cleans what is missing itself.

    Raises:
        ConfigError: One line naming the unfinished blocks (shard, rows, slice) and what to run.
    """
    from llmtune.data.clean.pipeline import shard_bounds

    if not (work / _SLICES).is_file():
        return
    count = int(json.loads((work / _SLICES).read_text(encoding="utf-8"))["count"])
    missing = [k for k in range(n_shards) if k not in done]
    if not missing:
        return
    bounds = shard_bounds(n_rows, shard_rows)
    named = ", ".join(f"shard {k} (rows {bounds[k][0]}-{bounds[k][1] - 1}, slice {k % count}/{count})" for k in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    slices = " and ".join(sorted({f"--shard {k % count}/{count}" for k in missing}))
    raise ConfigError(f"{len(missing)} of {n_shards} shards are not finished: {named}{more}; run (or wait for) the "
                      f"same command with {slices}, then run this final step again")


def complete(cfg: RunConfig, work: Path, out: Path, n_shards: int, spec: str, started: float) -> dict[str, Any]:
    """Cross-shard dedup, write data and reports into ``work/output``, rename it to ``out``."""
    from llmtune.config import dump_config
    from llmtune.data.clean.pipeline import finish
    from llmtune.data.clean.report import write_reports

    staging = work / "output"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        summary = finish(work, n_shards, cfg.clean, staging)
    except DataError:
        shutil.rmtree(work, ignore_errors=True)  # nothing to resume: every shard was fine, the settings are not
        raise
    report = write_reports(summary, staging / "report", spec, time.monotonic() - started)
    (staging / "report" / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)  # check_output allowed it: --overwrite
    staging.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    log(f"clean: wrote {report['output']['docs']:,} of {report['input']['docs']:,} documents to {out}")
    return {"docs_in": report["input"]["docs"], "docs_out": report["output"]["docs"],
            "chars_in": report["input"]["chars"], "chars_out": report["output"]["chars"],
            "files": len(report["output"]["files"]), "seconds": report["seconds"], "mb_per_second": report["mb_per_second"]}


def input_roots(spec: str) -> list[Path]:
    """Local folders or files the input comes from (empty for hub ids and builtin data)."""
    from llmtune.data.sources import looks_like_path

    if not spec or spec.startswith("builtin:"):
        return []
    path = Path(spec).expanduser()
    if path.exists():
        return [path.resolve()]
    if any(ch in spec for ch in "*?["):
        static = Path(spec.split("*")[0].split("?")[0].split("[")[0]).expanduser()
        return [(static if static.is_dir() else static.parent).resolve()] + [Path(p).resolve() for p in glob.glob(spec)]
    return [path.resolve()] if looks_like_path(spec) else []


def check_output(out: Path, spec: str, overwrite: bool) -> None:
    """Refuse an output inside (or equal to) the input, and an existing output without ``--overwrite``.

    Raises:
        ConfigError: One line saying which and how to fix it.
    """
    target = out.resolve()
    for root in input_roots(spec):
        if target == root or root in target.parents:
            raise ConfigError(f"output dir {out} is inside the input {spec}; choose an --output-dir outside it "
                              "(the input is never modified)")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output dir {out} is a file; choose a folder with --output-dir")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"output dir {out} already exists; pass --overwrite to replace it or choose another --output-dir")


def load_input(cfg: RunConfig) -> tuple[Any, str]:
    """The input split (Arrow-backed, read shard by shard) and its text column, checked.

    Raises:
        DataError: No such split, no such column (the message lists the columns found), not text.
    """
    from llmtune.data.sources import load_source, select_split

    spec = cfg.data.dataset or ""
    dataset = select_split(load_source(spec), cfg.data.split, spec)
    column = cfg.data.text_column or "text"
    if column not in dataset.column_names:
        texts = [name for name, f in dataset.features.items() if getattr(f, "dtype", "") in ("string", "large_string")]
        raise DataError(f"column '{column}' not found in {spec}; columns are: {', '.join(dataset.column_names)}. "
                        f"Pass --text-column {texts[0] if texts else 'NAME'}")
    dtype = getattr(dataset.features[column], "dtype", None)
    if dtype not in ("string", "large_string"):
        raise DataError(f"column '{column}' of {spec} holds {dtype or type(dataset.features[column]).__name__}, "
                        "not text; pass --text-column with a text column")
    missing = [name for name in cfg.clean.keep_columns if name not in dataset.column_names or name == "text"]
    if missing:
        raise DataError(f"clean.keep_columns: {', '.join(missing)} cannot be kept (the output's text column is "
                        f"'text'; columns of {spec}: {', '.join(dataset.column_names)})")
    if len(dataset) == 0:
        raise DataError(f"{spec} has no rows; pass a dataset with documents")
    return dataset, column


def plan(cfg: RunConfig, n_rows: int, column: str) -> dict[str, Any]:
    """What must match for finished shards to be reused: the input and every setting shards depend on."""
    clean = cfg.clean.model_dump(mode="json", exclude={"shard", "num_workers", "format"})
    return {"dataset": cfg.data.dataset, "split": cfg.data.split, "column": column, "rows": n_rows, "clean": clean}


def prepare_work_dir(work: Path, wanted: dict[str, Any], overwrite: bool) -> None:
    """Create ``work`` or check that the unfinished run in it used the same input and settings.

    Raises:
        ConfigError: It holds a run with other settings and ``overwrite`` is off.
    """
    found: Optional[dict[str, Any]] = None
    if (work / _PLAN).is_file():
        found = json.loads((work / _PLAN).read_text(encoding="utf-8"))
    if found is not None and found != wanted:
        if not overwrite:
            raise ConfigError(f"{work} holds an unfinished clean of other data or settings; pass --overwrite to "
                              "discard it, or rerun with the same settings to continue it")
        shutil.rmtree(work)
        found = None
    work.mkdir(parents=True, exist_ok=True)
    if found is None:
        (work / _PLAN).write_text(json.dumps(wanted, indent=2), encoding="utf-8")
