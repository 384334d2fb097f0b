"""``llmtune data inspect``: load a dataset exactly as training would, validate it, and show it."""

from typing import Annotated, Optional

import typer

from llmtune.cli import _options as o
from llmtune.cli._common import handle_errors, resolve_config

app = typer.Typer(no_args_is_help=True)


@app.command(
    "inspect",
    help="Show splits, row counts, columns, examples and label distribution; check the task's columns exist.",
    epilog="Examples:\n\n  llmtune data inspect --dataset builtin:classification --task classification\n\n"
    "  llmtune data inspect --dataset reviews.csv --task classification --label-column sentiment\n\n"
    "  llmtune data inspect --dataset builtin:chat --task generation --model runs/llama-tiny --show-masking 2",
)
@handle_errors
def inspect(
    dataset: o.Dataset = None,
    task: Annotated[Optional[o.InspectTask], typer.Option("--task", "-t", help="Validate the columns this task needs.")] = None,
    eval_dataset: o.EvalDataset = None,
    split: o.Split = None,
    eval_split: o.EvalSplit = None,
    text_column: o.TextColumn = None,
    text_pair_column: o.TextPairColumn = None,
    label_column: o.LabelColumn = None,
    columns: o.Columns = None,
    max_samples: o.MaxSamples = None,
    examples: Annotated[int, typer.Option("--examples", "-n", help="Example rows to show.")] = 3,
    model: o.Model = None,
    data_format: o.Format = None,
    train_on_prompt: o.TrainOnPrompt = None,
    show_masking: Annotated[int, typer.Option(
        "--show-masking", help="Generation: print N examples as tokenized for training, trained tokens highlighted "
        "(needs --model for its tokenizer).")] = 0,
    recipe: o.Recipe = None,
    set_: o.Set = None,
    print_config: o.PrintConfig = False,
) -> None:
    cfg = resolve_config("data", locals())  # first: locals() holds the parameters only
    from rich.console import Console

    from llmtune.data.inspect import inspect_data, print_inspection
    from llmtune.data.loading import load_task_data
    from llmtune.tasks.registry import TASKS, ColumnSpec

    spec = TASKS[cfg.task].columns if cfg.task else ColumnSpec()
    task_data = load_task_data(cfg.data, spec, seed=cfg.train.seed)
    console = Console()
    print_inspection(inspect_data(task_data, spec, n_examples=examples), console)
    if show_masking > 0:
        from llmtune.data.inspect import print_masking

        print_masking(cfg, task_data, show_masking, console)


@app.command(
    "clean",
    help="Clean a raw corpus for pre-training: repair Unicode, strip HTML and boilerplate, filter by length, "
    "language and quality, mask PII, decontaminate, drop exact and near duplicates. See docs/data-clean.md.",
    epilog="Examples:\n\n  llmtune data clean --dataset raw.jsonl --output-dir corpus/\n\n"
    "  llmtune data clean --dataset crawl/ --recipe clean/web --decontaminate eval.jsonl -o corpus/ --num-workers 2\n\n"
    "  llmtune data clean --dataset raw.jsonl -o corpus/ --shard 0/2   (then 1/2, then once without --shard)",
)
@handle_errors
def clean(
    dataset: o.Dataset = None,
    text_column: o.TextColumn = None,
    output_dir: Annotated[Optional[str], typer.Option("--output-dir", "-o", help="Folder to write the cleaned corpus to.")] = None,
    num_workers: Annotated[Optional[int], typer.Option("--num-workers", help="Processes cleaning shards in parallel.")] = None,
    shard: Annotated[Optional[str], typer.Option(
        "--shard", help="i/N: clean only slice i of N (one machine of N); a final run without --shard dedups "
        "across slices and writes the corpus.")] = None,
    decontaminate: Annotated[Optional[list[str]], typer.Option(
        "--decontaminate", help="Evaluation file: drop documents sharing a 13-word n-gram with it (repeatable).")] = None,
    output_format: Annotated[Optional[o.CleanFormat], typer.Option("--format", help="Format of the cleaned shards.")] = None,
    overwrite: Annotated[Optional[bool], typer.Option("--overwrite", help="Replace an existing --output-dir.")] = None,
    recipe: o.Recipe = None,
    set_: o.Set = None,
    print_config: o.PrintConfig = False,
) -> None:
    cfg = resolve_config("data", locals())  # first: locals() holds the parameters only; recipes say command: data
    from rich.console import Console
    from rich.table import Table

    from llmtune.runs.clean import run

    result = run(cfg)
    table = Table(title="llmtune data clean: " + ("slice done" if cfg.clean.shard else "done"), show_header=False)
    for key, value in result.metrics.items():
        table.add_row(key, f"{value:,.4g}" if isinstance(value, float) else f"{value:,}")
    table.add_row("output", str(result.run_dir))
    Console().print(table)
