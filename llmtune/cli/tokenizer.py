"""``llmtune tokenizer train``: train a tokenizer on your text."""

from typing import Annotated, Optional

import typer

from llmtune.cli import _options as o
from llmtune.cli._common import handle_errors, resolve_config
from llmtune.errors import ConfigError

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
    family: Annotated[
        Optional[str], typer.Option("--family", help="causal (bos/eos/pad) or masked ([CLS]/[SEP]/[MASK]) specials.")
    ] = None,
    text_column: o.TextColumn = None,
    eval_dataset: o.EvalDataset = None,
    max_samples: o.MaxSamples = None,
    output_dir: o.OutputDir = None,
    overwrite: o.Overwrite = None,
    recipe: o.Recipe = None,
    set_: o.Set = None,
    print_config: o.PrintConfig = False,
) -> None:
    if family not in (None, "causal", "masked"):
        raise ConfigError(f"--family must be causal or masked, not '{family}'")
    cfg = resolve_config("tokenizer", locals())  # before the import: locals() holds the parameters only
    from llmtune.runs.tokenizer import run

    result = run(cfg, family)
    m = result.metrics
    typer.echo(
        f"vocab size {m['vocab_size']}, trained in {m['train_seconds']:.1f}s on {m['train_texts']:,} texts; "
        f"held-out: {m.get('heldout_bytes_per_token', 0):.2f} bytes/token, "
        f"{m.get('heldout_chars_per_token', 0):.2f} chars/token\n"
        f"saved to {result.run_dir} (AutoTokenizer.from_pretrained('{result.run_dir}'))"
    )
