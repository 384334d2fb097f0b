"""``llmtune export``: turn a run into a plain Hugging Face model folder (merging LoRA adapters)."""

from enum import Enum
from typing import Annotated, Optional

import typer

HELP = "Export a run as a plain Hugging Face model folder; --merge folds LoRA adapters into the base model."
EXAMPLES = (
    "Examples:\n\n"
    "  llmtune export runs/sft-lora --merge --output-dir exported/sft\n\n"
    "  llmtune export runs/sft-lora/adapter --merge --base-model Qwen/Qwen2.5-0.5B-Instruct -o exported/qwen-sft\n\n"
    "  llmtune export runs/sft-full -o exported/sft  (a run without adapters: its model files are copied)\n\n"
    "  llmtune export runs/cls --format onnx --quantize int8 -o exported/cls-onnx  (ONNX Runtime; parity-checked; "
    "needs pip install 'llmtune\\[compress]')"
)


class Format(str, Enum):
    """What the exported folder holds."""

    hf = "hf"
    onnx = "onnx"


class Quantize(str, Enum):
    """Quantization applied to an ONNX export."""

    int8 = "int8"


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
    format: Annotated[Format, typer.Option("--format", help="hf: safetensors folder; onnx: model.onnx for ONNX Runtime "
                                                            "(classification, QA, causal LM heads).")] = Format.hf,
    quantize: Annotated[
        Optional[Quantize], typer.Option("--quantize", help="With --format onnx: ONNX Runtime dynamic int8 quantization.")
    ] = None,
) -> None:
    from rich.console import Console
    from rich.table import Table

    from llmtune.modeling import format_params
    from llmtune.runs.export import run

    result = run(run_dir, output_dir, merge=merge, base_model=base_model, dtype=dtype.value, overwrite=overwrite,
                 format=format.value, quantize=quantize.value if quantize else None)
    table = Table(title="llmtune export: done", show_header=False)
    table.add_row("source", run_dir)
    if result.format == "onnx":
        table.add_row("format", f"ONNX{' (int8 dynamic quantization)' if quantize else ''}")
        for line in result.parity:
            table.add_row("parity", line.removeprefix("parity "))
    else:
        table.add_row("merged", f"LoRA adapters into {result.base_model}" if result.merged else "no (model files copied)")
    if result.parameters:
        table.add_row("parameters", format_params(result.parameters))
    table.add_row("size", f"{result.bytes_on_disk / 2**20:,.1f} MiB")
    table.add_row("output dir", str(result.output_dir))
    Console().print(table)
