"""``llmtune quantize``: a run's model -> a torchao-quantized model folder that every command loads."""

from typing import Annotated

import typer

HELP = "Quantize a run's model with torchao (int8 dynamic, int8/int4 weight-only) into a folder from_pretrained loads."
EXAMPLES = (
    "Examples:\n\n"
    "  llmtune quantize runs/cls --method int8-dynamic -o exported/cls-int8\n\n"
    "  llmtune quantize runs/sft --method int8-weight-only -o exported/sft-w8\n\n"
    "  llmtune eval --model exported/cls-int8 -d val.csv   (every command loads the result)\n\n"
    "int4-weight-only needs a CUDA GPU. A LoRA adapter folder is merged first: llmtune export RUN --merge -o MERGED. "
    "Needs the compress extra: pip install 'llmtune\\[compress]'."
)


def quantize(
    run_dir: Annotated[str, typer.Argument(help="Run dir or Hugging Face model folder (full precision).")],
    method: Annotated[str, typer.Option("--method", help="int8-dynamic, int8-weight-only or int4-weight-only.")],
    output_dir: Annotated[str, typer.Option("--output-dir", "-o", help="Folder to write (must be new or empty).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --output-dir.")] = False,
) -> None:
    from rich.console import Console
    from rich.table import Table

    from llmtune.runs.quantize import run

    result = run(run_dir, output_dir, method=method, overwrite=overwrite)
    table = Table(title="llmtune quantize: done", show_header=False)
    table.add_row("source", run_dir)
    table.add_row("method", f"{result.method} (torchao), {result.quantized_layers} linear layers")
    if result.embeddings:
        table.add_row("embeddings", f"{', '.join(result.embeddings)} (int8, one scale per row)")
    table.add_row("weights", f"{result.bytes_on_disk / 2**20:,.2f} MiB ({result.ratio:.2f}x the source's "
                             f"{result.source_bytes / 2**20:,.2f} MiB)")
    table.add_row("output dir", str(result.output_dir))
    Console().print(table)
