"""``llmtune generate``: sample text from a model (streaming, batch files, chat)."""

from typing import Annotated, Optional

import typer

from llmtune.cli import _options as o
from llmtune.cli._common import resolve_config

HELP = "Generate text: sampling controls, streaming, batch prompt files and interactive chat."
EXAMPLES = (
    "Examples:\n\n"
    '  llmtune generate -m runs/llama-tiny "Once upon a time" --max-new-tokens 60\n\n'
    "  llmtune generate -m runs/sft --file prompts.jsonl --output completions.jsonl --temperature 0\n\n"
    '  echo "The river" | llmtune generate -m runs/llama-tiny --stop "." --seed 1\n\n'
    "  llmtune generate -m runs/sft --chat\n\n"
    "One prompt streams its completion to stdout; a prompt file gives one JSON line per completion "
    '({"prompt", "completion"}) in input order. Timing goes to stderr. Sampling defaults: '
    "temperature 0.8, top-k 50, top-p 1, 256 new tokens (generate.* in --print-config)."
)


def generate(
    prompt: Annotated[Optional[str], typer.Argument(help="Prompt text (or use --file, stdin, or --chat).")] = None,
    model: o.Model = None,
    file: Annotated[
        Optional[str], typer.Option("--file", "-f", help="Prompts: .txt (one per line) or .jsonl (a 'prompt' field).")
    ] = None,
    prompt_column: Annotated[Optional[str], typer.Option("--prompt-column", help="Field of a .jsonl file holding the prompt.")] = None,
    output: Annotated[Optional[str], typer.Option("--output", help="Write the JSON lines here instead of stdout.")] = None,
    chat: Annotated[bool, typer.Option("--chat", help="Interactive chat on stdin (/reset, /exit).")] = False,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", help="Tokens to generate (capped by the context).")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="0 = greedy; higher = more random.")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Sample among the k most likely tokens (0 = off).")] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling mass in (0, 1].")] = None,
    repetition_penalty: Annotated[Optional[float], typer.Option("--repetition-penalty", help="> 1 discourages repeats.")] = None,
    num_return_sequences: Annotated[
        Optional[int], typer.Option("--num-return-sequences", "-n", help="Completions per prompt (needs temperature > 0).")
    ] = None,
    stop: Annotated[Optional[list[str]], typer.Option("--stop", help="Cut the output at this string (repeatable).")] = None,
    sample_seed: Annotated[Optional[int], typer.Option("--seed", help="Seed for reproducible sampling.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Prompts per batch for --file (default 16).")] = None,
    recipe: o.Recipe = None,
    allow_pickle: o.AllowPickle = None,
    trust_remote_code: o.TrustRemoteCode = None,
    set_: o.Set = None,
    print_config: o.PrintConfig = False,
) -> None:
    stop = stop or None  # an absent repeatable option arrives as [], which would clear a recipe's stop list
    cfg = resolve_config("generate", locals())  # before the import: locals() holds the parameters only
    from llmtune.runs.generate import GenerateInputs, run

    run(cfg, GenerateInputs(prompt=prompt, file=file, output=output, chat=chat))
