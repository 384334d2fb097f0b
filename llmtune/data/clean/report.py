"""What ``llmtune data clean`` reports: ``clean_report.json``, ``report.md`` and ``lengths.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmtune.data.clean.pipeline import CleanSummary


def report_dict(summary: CleanSummary, source: str, elapsed: float) -> dict[str, Any]:
    """The JSON report: input, output, each stage's counts, reasons and examples, largest duplicate clusters."""
    docs_out = len(summary.lengths_out)
    chars_out = sum(summary.lengths_out)
    return {
        "input": {"dataset": source, "docs": summary.docs_in, "chars": summary.chars_in, "bytes": summary.bytes_in},
        "output": {"docs": docs_out, "chars": chars_out, "files": summary.files,
                   "kept_docs_fraction": docs_out / max(summary.docs_in, 1),
                   "kept_chars_fraction": chars_out / max(summary.chars_in, 1)},
        "stages": {name: stage.to_dict() for name, stage in summary.stages.items()},
        "duplicate_clusters": summary.clusters,
        "seconds": round(elapsed, 2),
        "mb_per_second": round(summary.bytes_in / 1e6 / max(elapsed, 1e-9), 3),
    }


def _snippet(text: str, width: int = 120) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def report_markdown(report: dict[str, Any]) -> str:
    """``report.md``: a table of stages, removal reasons with examples, the largest duplicate clusters."""
    inp, out = report["input"], report["output"]
    lines = [
        "# llmtune data clean", "",
        f"Input `{inp['dataset']}`: {inp['docs']:,} documents, {inp['chars']:,} characters. "
        f"Output: {out['docs']:,} documents ({out['kept_docs_fraction']:.1%}), {out['chars']:,} characters "
        f"({out['kept_chars_fraction']:.1%}) in {len(out['files'])} file(s). "
        f"{report['seconds']} s, {report['mb_per_second']} MB/s.", "",
        "![document lengths](lengths.png)", "",
        "| # | stage | on | docs in | docs out | chars in | chars out | changed | removed by reason |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for number, (name, stage) in enumerate(report["stages"].items(), start=1):
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in stage["removed"].items()) or "-"
        lines.append(f"| {number} | {name} | {'yes' if stage['enabled'] else 'no'} | {stage['docs_in']:,} | "
                     f"{stage['docs_out']:,} | {stage['chars_in']:,} | {stage['chars_out']:,} | {stage['modified']:,} | {reasons} |")
    lines += ["", "## Examples of removed documents", ""]
    for name, stage in report["stages"].items():
        for reason, examples in stage["examples"].items():
            lines.append(f"### {name}: {reason}")
            lines += [f"- row {ex['row']}{' (' + ex['detail'] + ')' if ex.get('detail') else ''}: {_snippet(ex['text'])}"
                      for ex in examples]
            lines.append("")
    if report["duplicate_clusters"]:
        lines += ["## Largest duplicate clusters", "", "| kept row | size | removed rows | kept text |", "|---|---|---|---|"]
        lines += [f"| {c['kept_row']} | {c['size']} | {', '.join(map(str, c['removed_rows']))} | {_snippet(c['text'], 80)} |"
                  for c in report["duplicate_clusters"]]
    return "\n".join(lines) + "\n"


def lengths_png(before: list[int], after: list[int], path: Path) -> Path:
    """Histograms of document lengths (characters, log scale) before and after cleaning."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4))
    values = [max(n, 1) for n in before + after] or [1]
    bins = np.logspace(0, np.log10(max(values) + 1), 40)
    ax.hist([max(n, 1) for n in before], bins=bins, alpha=0.5, label=f"before ({len(before):,} docs)")
    ax.hist([max(n, 1) for n in after], bins=bins, alpha=0.5, label=f"after ({len(after):,} docs)")
    ax.set_xscale("log")
    ax.set_xlabel("document length (characters)")
    ax.set_ylabel("documents")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_reports(summary: CleanSummary, folder: Path, source: str, elapsed: float) -> dict[str, Any]:
    """Write the three report files into ``folder``; returns the JSON report."""
    report = report_dict(summary, source, elapsed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clean_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    (folder / "report.md").write_text(report_markdown(report), encoding="utf-8")
    lengths_png(summary.lengths_in, summary.lengths_out, folder / "lengths.png")
    return report
