"""The ``llmtune`` Typer app: wiring only. Each command lives in its own module."""

import os
from typing import Annotated, Optional

import typer

from llmtune import __version__
from llmtune.cli import (
    data, distill, eval_, export, finetune, generate, pretrain, prune, quantize, quickstart, recipes, report, serve,
    sweep, tokenizer,
)
from llmtune.cli._common import handle_errors

app = typer.Typer(
    name="llmtune",
    help="Train tokenizers, pre-train and fine-tune language models, evaluate and generate — on the Hugging Face stack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmtune {__version__}")
        raise typer.Exit()


@app.callback(epilog=(
    "Examples:\n\n  llmtune quickstart -o runs/demo   (the whole path on the builtin data, ~6 min on 2 CPU cores)\n\n"
    "  llmtune recipes list\n\n  llmtune pretrain --recipe pretrain/llama-tiny -o runs/llama-tiny\n\n"
    "Docs: docs/README.md. Shell completion: llmtune --install-completion."))
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """llmtune: raw text -> tokenizer -> pre-trained / fine-tuned model -> evaluation -> generation."""
    if debug:
        os.environ["LLMTUNE_DEBUG"] = "1"


def _register() -> None:
    app.add_typer(tokenizer.app, name="tokenizer", help="Train a tokenizer (BPE, WordPiece, Unigram, char) on your text.")
    app.command("quickstart", help=quickstart.HELP, epilog=quickstart.EXAMPLES)(handle_errors(quickstart.quickstart))
    app.command("pretrain", help=pretrain.HELP, epilog=pretrain.EXAMPLES)(handle_errors(pretrain.pretrain))
    app.command("finetune", help=finetune.HELP, epilog=finetune.EXAMPLES)(handle_errors(finetune.finetune))
    app.command("sweep", help=sweep.HELP, epilog=sweep.EXAMPLES)(handle_errors(sweep.sweep))
    app.command("eval", help=eval_.HELP, epilog=eval_.EXAMPLES)(handle_errors(eval_.evaluate))
    app.command("report", help=report.HELP, epilog=report.EXAMPLES)(handle_errors(report.report))
    app.command("generate", help=generate.HELP, epilog=generate.EXAMPLES)(handle_errors(generate.generate))
    app.command("distill", help=distill.HELP, epilog=distill.EXAMPLES)(handle_errors(distill.distill))
    app.command("prune", help=prune.HELP, epilog=prune.EXAMPLES)(handle_errors(prune.prune))
    app.command("export", help=export.HELP, epilog=export.EXAMPLES)(handle_errors(export.export))
    app.command("quantize", help=quantize.HELP, epilog=quantize.EXAMPLES)(handle_errors(quantize.quantize))
    app.command("serve", help=serve.HELP, epilog=serve.EXAMPLES)(handle_errors(serve.serve))
    app.add_typer(recipes.app, name="recipes", help="List, show and copy the shipped YAML recipes.")
    app.add_typer(data.app, name="data", help="Inspect and validate datasets before training.")


_register()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="llmtune")
