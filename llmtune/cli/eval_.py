"""``llmtune eval``: metrics, reports and plots for a model on a dataset."""

from typing import Annotated, Optional

import typer

from llmtune.cli import _options as o
from llmtune.cli._common import not_landed, resolve_config

HELP = "Evaluate a model: accuracy/F1 + confusion matrix, QA EM/F1, perplexity and bits per character."
EXAMPLES = "Examples:\n\n  llmtune eval --model runs/cls --dataset builtin:classification --task classification"


def evaluate(
    model: o.Model = None,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="classification | qa | generation | lm.")] = None,
    recipe: o.Recipe = None,
    dataset: o.Dataset = None,
    split: o.Split = None,
    text_column: o.TextColumn = None,
    label_column: o.LabelColumn = None,
    max_samples: o.MaxSamples = None,
    batch_size: o.BatchSize = None,
    output_dir: o.OutputDir = None,
    set_: o.Set = None,
    print_config: o.PrintConfig = False,
) -> None:
    resolve_config("eval", locals())
    not_landed("eval", 6)
