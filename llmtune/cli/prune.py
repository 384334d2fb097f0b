"""``llmtune prune``: remove whole attention heads, FFN channels or layers -> a smaller dense HF folder."""

from typing import Annotated, Optional

import typer

from llmtune.cli import _options as o
from llmtune.cli._common import print_summary, resolve_config

HELP = ("Structured pruning: remove the least important attention heads, FFN channels and/or layers (gradient x "
        "activation on a calibration sample) and save a smaller dense model; optionally fine-tune to recover.")
EXAMPLES = (
    "Examples:\n\n"
    "  llmtune prune runs/cls-minilm --ffn 0.3 --layers 2 -d train.csv -o runs/cls-pruned\n\n"
    "  llmtune prune runs/cls-minilm --ffn 0.5 --recover-steps 300 --recover-distill -d train.csv -o runs/cls-pruned\n\n"
    "  llmtune prune runs/llama-small --heads 0.25 --layers 2 --recover-steps 200 -d corpus/ -o runs/llama-pruned\n\n"
    "  (BERT models take --ffn and --layers: transformers 5 cannot save a BERT with fewer heads; docs/distill-prune.md)"
)


def prune(
    model: Annotated[str, typer.Argument(help="Run dir or model folder (classification head or causal LM).")],
    heads: Annotated[Optional[float], typer.Option("--heads", help="Fraction of heads to remove per layer, 0..1.")] = None,
    ffn: Annotated[Optional[float], typer.Option("--ffn", help="Fraction of FFN channels to remove per layer.")] = None,
    layers: Annotated[Optional[int], typer.Option("--layers", help="Number of whole layers to remove.")] = None,
    recover_steps: Annotated[Optional[int], typer.Option(
        "--recover-steps", help="Fine-tune the pruned model this many steps on --dataset.")] = None,
    recover_distill: Annotated[Optional[bool], typer.Option(
        "--recover-distill", help="Recover by distilling from the unpruned model (--set distill.alpha=...).")] = None,
    calibration_samples: Annotated[Optional[int], typer.Option(
        "--calibration-samples", help="Rows importance is measured on (default 64).")] = None,
    recipe: o.Recipe = None,
    dataset: o.Dataset = None,
    eval_dataset: o.EvalDataset = None,
    text_column: o.TextColumn = None,
    label_column: o.LabelColumn = None,
    max_samples: o.MaxSamples = None,
    output_dir: o.OutputDir = None,
    lr: o.Lr = None,
    batch_size: o.BatchSize = None,
    seed: o.Seed = None,
    overwrite: o.Overwrite = None,
    allow_pickle: o.AllowPickle = None,
    set_: o.Set = None,
    print_config: o.PrintConfig = False,
) -> None:
    cfg = resolve_config("prune", locals())  # first: locals() holds the parameters only
    from llmtune.runs.prune import run

    print_summary("prune", run(cfg))
