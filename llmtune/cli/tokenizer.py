"""``llmtune tokenizer train``: train a tokenizer on your text."""

from typing import Annotated, Optional

import typer

from llmtune.cli import _options as o
from llmtune.cli._common import handle_errors, not_landed, resolve_config

app = typer.Typer(no_args_is_help=True)


@app.command(
    "train",
    help="Train a BPE, WordPiece, Unigram or char tokenizer on a dataset and save it for AutoTokenizer.",
    epilog="Example:\n\n  llmtune tokenizer train --dataset builtin:text --type bpe --vocab-size 4000 -o tok/",
)
@handle_errors
def train(
    dataset: o.Dataset = None,
    tok_type: Annotated[Optional[str], typer.Option("--type", help="bpe | wordpiece | unigram | char.")] = None,
    vocab_size: Annotated[Optional[int], typer.Option("--vocab-size", help="Vocabulary size.")] = None,
    min_frequency: Annotated[Optional[int], typer.Option("--min-frequency", help="Minimum pair frequency.")] = None,
    special_tokens: Annotated[
        Optional[list[str]], typer.Option("--special-tokens", help="Extra special token (repeatable).")
    ] = None,
    text_column: o.TextColumn = None,
    output_dir: o.OutputDir = None,
    recipe: o.Recipe = None,
    set_: o.Set = None,
    print_config: o.PrintConfig = False,
) -> None:
    resolve_config("tokenizer", locals())
    not_landed("tokenizer train", 3)
