"""``llmtune eval``: metrics, reports and plots for a model on a dataset."""

from typing import Annotated, Optional

import typer

from llmtune.cli import _options as o
from llmtune.cli._common import resolve_config

HELP = ("Evaluate a model: accuracy/F1 + confusion matrix, QA EM/F1, perplexity and bits per character; "
        "writes eval_metrics.json, report.md, predictions.jsonl and plots.")
EXAMPLES = (
    "Examples:\n\n"
    "  llmtune eval --model runs/cls --dataset val.csv                 # task and labels from the run\n\n"
    "  llmtune eval -m runs/qa -d builtin:qa --max-samples 200 -o runs/qa-eval\n\n"
    "  llmtune eval -m runs/llama-tiny -d builtin:text --task lm --set eval.stride=128\n\n"
    "  llmtune eval -m runs/sft -d dev.jsonl --task generation --generate --set generate.max_new_tokens=64"
)


def evaluate(
    model: o.Model = None,
    task: Annotated[
        Optional[o.InspectTask],
        typer.Option("--task", "-t", help="What to score (default: from the run's config or the model's head)."),
    ] = None,
    recipe: o.Recipe = None,
    dataset: o.Dataset = None,
    eval_split: Annotated[
        Optional[str], typer.Option("--split", help="Split to evaluate (default: validation/dev/test, else train).")
    ] = None,
    text_column: o.TextColumn = None,
    text_pair_column: o.TextPairColumn = None,
    label_column: o.LabelColumn = None,
    columns: o.Columns = None,
    max_samples: Annotated[Optional[int], typer.Option("--max-samples", help="Evaluate the first N rows only.")] = None,
    eval_batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Examples per batch.")] = None,
    eval_generate: Annotated[
        Optional[bool], typer.Option("--generate", help="Generation: also score greedy responses (EM, ROUGE, BLEU).")
    ] = None,
    output_dir: Annotated[
        Optional[str],
        typer.Option("--output-dir", "-o", help="Folder to write (default: RUN_DIR/eval or runs/eval-NAME)."),
    ] = None,
    overwrite: o.Overwrite = None,
    allow_pickle: o.AllowPickle = None,
    trust_remote_code: o.TrustRemoteCode = None,
    set_: o.Set = None,
    print_config: o.PrintConfig = False,
) -> None:
    cfg = resolve_config("eval", locals())  # first: locals() holds the parameters only
    from llmtune.reports.terminal import print_metrics
    from llmtune.dist import is_main_process
    from llmtune.runs.evaluate import METRICS_FILE, run

    result = run(cfg)
    if not is_main_process():  # under accelerate/torchrun every process predicts; one reports
        return
    files = [(name, result.run_dir / name) for name in (METRICS_FILE, "report.md", "predictions.jsonl")
             if (result.run_dir / name).is_file()]
    print_metrics(f"llmtune eval: {cfg.task or result.metrics.get('task', '')}", result.metrics, files)
