"""``llmtune quickstart``: the whole path on the builtin data, ending with one summary table."""

import os
from typing import Annotated, Any, Optional

import typer

HELP = ("Run the whole product on the builtin data in ~6 minutes on 2 CPU cores: tokenizer -> pre-train a tiny "
        "Llama -> SFT -> DPO -> pre-train a tiny BERT -> classifier + QA -> eval each -> generate -> serve (one HTTP "
        "request); one summary table.")
EXAMPLES = (
    "Examples:\n\n"
    "  llmtune quickstart --output-dir runs/demo\n\n"
    "  llmtune quickstart -o runs/demo --overwrite --lm-budget 4m --mlm-budget 2m   (longer: learns more)\n\n"
    "  llmtune quickstart -o /tmp/qs --max-steps 2 --max-samples 32   (a smoke test in under a minute)\n\n"
    "Each stage is an ordinary run dir under --output-dir (llama-tiny, sft, bert-tiny, classifier, qa, each with "
    "eval/); summary.md and summary.json hold the table, the generations and the paths of the plots and reports."
)


def quickstart(
    output_dir: Annotated[
        str, typer.Option("--output-dir", "-o", help="Folder for every stage's run dir and the summary.")
    ] = "runs/quickstart",
    lm_budget: Annotated[
        str, typer.Option("--lm-budget", help="Time budget for pre-training the tiny Llama (e.g. 100s, 4m).")
    ] = "100s",
    mlm_budget: Annotated[
        str, typer.Option("--mlm-budget", help="Time budget for pre-training the tiny BERT.")
    ] = "60s",
    finetune_budget: Annotated[
        str, typer.Option("--finetune-budget", help="Cap on each fine-tuning stage (SFT, classifier, QA).")
    ] = "90s",
    max_steps: Annotated[
        Optional[int], typer.Option("--max-steps", help="Cap every training stage at N steps.")
    ] = None,
    max_samples: Annotated[
        Optional[int], typer.Option("--max-samples", help="At most N training and N evaluation rows per stage.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier quickstart in --output-dir.")
    ] = False,
) -> None:
    from rich.console import Console

    from llmtune.config import parse_duration
    from llmtune.errors import ConfigError
    from llmtune.pipelines.quickstart import QuickstartOptions, run

    budgets = (("--lm-budget", lm_budget), ("--mlm-budget", mlm_budget), ("--finetune-budget", finetune_budget))
    for flag, value in budgets:
        try:
            parse_duration(value)
        except ValueError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
    err = Console(stderr=True)

    def header(i: int, n: int, title: str) -> None:
        err.rule(f"[bold]quickstart {i}/{n}[/bold]: {title}")

    opts = QuickstartOptions(output_dir, lm_budget, mlm_budget, finetune_budget, max_steps, max_samples, overwrite)
    print_quickstart(run(opts, on_stage=header))


def print_quickstart(qs: Any) -> None:
    """The summary table, the generations and where the plots, reports and summary files are."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from llmtune.pipelines.quickstart import artefacts

    console = Console()
    title = f"llmtune quickstart: done in {qs.total_seconds / 60:.1f} min, outputs in {escape(str(qs.root))}/"
    table = Table(title=title)
    for column in ("stage", "result (validation split)", "baseline", "time", "output"):
        table.add_column(column)
    for r in qs.results:
        where = r.path if "://" in r.path or r.path == "-" else os.path.relpath(r.path, qs.root)  # a URL: as is
        table.add_row(r.stage, r.metric, r.baseline, f"{r.seconds:.0f} s", escape(where))
    console.print(table)
    for g in qs.generations:
        instruction, answer, reference = (escape(t) for t in (g["prompt"].splitlines()[1], repr(g["completion"]),
                                                                repr(g["reference"])))
        console.print(f"[bold]{instruction}[/bold] -> {answer}  (reference: {reference})")
    if qs.served:
        served = qs.served
        console.print(f"served: POST {escape(served['url'])} [bold]{escape(served['prompt'].splitlines()[1])}[/bold] "
                      f"-> {escape(repr(served['completion']))}  (then the server stopped)")
    plots, reports = artefacts(qs.root)
    console.print(f"plots: {', '.join(str(p.relative_to(qs.root)) for p in plots)} (under {qs.root})")
    console.print(f"reports: {', '.join(str(p.relative_to(qs.root)) for p in reports)} (under {qs.root})")
    console.print(f"summary: {qs.root / 'summary.md'} and summary.json")
