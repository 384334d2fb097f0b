"""``llmtune generate``: sample text from a model (streaming, batch files, chat)."""

from typing import Annotated, Optional

import typer

from llmtune.cli import _options as o
from llmtune.cli._common import not_landed

HELP = "Generate text: sampling controls, streaming, batch prompt files and interactive chat."
EXAMPLES = 'Examples:\n\n  llmtune generate --model runs/sft "Give the opposite of hot."'


def generate(
    prompt: Annotated[Optional[str], typer.Argument(help="Prompt text (or use --file / stdin).")] = None,
    model: o.Model = None,
) -> None:
    not_landed("generate", 6)


