"""``llmtune export``: turn a run into a plain Hugging Face model folder (merging LoRA adapters)."""

from enum import Enum
from typing import Annotated, Optional

import typer

HELP = "Export a run as a plain Hugging Face model folder; --merge folds LoRA adapters into the base model."
EXAMPLES = (
    "Examples:\n\n"
    "  llmtune export runs/sft-lora --merge --output-dir exported/sft\n\n"
    "  llmtune export runs/sft-lora/adapter --merge --base-model Qwen/Qwen2.5-0.5B-Instruct -o exported/qwen-sft\n\n"
    "  llmtune export runs/sft-full -o exported/sft  (a run without adapters: its model files are copied)"
)


class Dtype(str, Enum):
    """Weight types of the exported model."""

    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


def export(
    run_dir: Annotated[str, typer.Argument(help="Run dir, model folder, or LoRA adapter folder (with --merge).")],
    output_dir: Annotated[str, typer.Option("--output-dir", "-o", help="Folder to write (must be new or empty).")],
    merge: Annotated[bool, typer.Option("--merge", help="Merge the LoRA adapters into their base model.")] = False,
    base_model: Annotated[
        Optional[str], typer.Option("--base-model", help="Base model for --merge (default: the one the adapters name).")
    ] = None,
    dtype: Annotated[Dtype, typer.Option("--dtype", help="Weight type of a merged model (auto: the base's).")] = Dtype.auto,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --output-dir.")] = False,
) -> None:
    from rich.console import Console
    from rich.table import Table

    from llmtune.modeling import format_params
    from llmtune.runs.export import run

    result = run(run_dir, output_dir, merge=merge, base_model=base_model, dtype=dtype.value, overwrite=overwrite)
    table = Table(title="llmtune export: done", show_header=False)
    table.add_row("source", run_dir)
    table.add_row("merged", f"LoRA adapters into {result.base_model}" if result.merged else "no (model files copied)")
    if result.parameters:
        table.add_row("parameters", format_params(result.parameters))
    table.add_row("size", f"{result.bytes_on_disk / 2**20:,.1f} MiB")
    table.add_row("output dir", str(result.output_dir))
    Console().print(table)
