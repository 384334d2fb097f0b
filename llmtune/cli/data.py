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
    from llmtune.tasks import TASK_INFO, ColumnSpec

    spec = TASK_INFO[cfg.task].columns if cfg.task else ColumnSpec()
    task_data = load_task_data(cfg.data, spec, seed=cfg.train.seed)
    console = Console()
    print_inspection(inspect_data(task_data, spec, n_examples=examples), console)
    if show_masking > 0:
        from llmtune.data.inspect import print_masking

        print_masking(cfg, task_data, show_masking, console)
