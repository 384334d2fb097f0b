"""``llmtune report``: rebuild report.md and the plots of a run dir from its logs and metrics."""

from typing import Annotated

import typer

HELP = "Rebuild report.md and plots (curves, confusion matrix, per-class F1) of a run dir or eval folder."
EXAMPLES = "Examples:\n\n  llmtune report runs/cls\n\n  llmtune report runs/cls/eval"


def report(
    run_dir: Annotated[str, typer.Argument(help="A run dir (metrics.json) or an eval folder (eval_metrics.json).")],
) -> None:
    from llmtune.reports.run_report import regenerate
    from llmtune.reports.terminal import print_metrics

    metrics, written = regenerate(run_dir)
    print_metrics(f"llmtune report: {run_dir}", metrics, [("wrote", path) for path in written])
