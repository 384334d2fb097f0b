"""``llmtune generate``: prompts in, text out, streamed, batched into JSON lines, or as a chat.

The spine::

    prompts (argument | --file | stdin), read and checked before any weights load
      -> tokenizer + model (a HF folder, an llmtune run dir, or a bare peft adapter folder)
      -> one prompt, one completion: tokens stream to stdout as they are produced
         many prompts (or --output, or n > 1): length-sorted, left-padded batches -> JSON lines in input order
         --chat: a loop over stdin lines rendered with the tokenizer's chat template (or llmtune's builtin one)

Timing (time to first token, tokens/s) and warnings go to stderr, so stdout stays clean for piping.
Sampling settings come from ``cfg.generate`` (see ``GenerateConfig``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from llmtune.config.schema import GenerateConfig, RunConfig
from llmtune.decoding import GenerateStats, StopWriter, TokenStream, cap_new_tokens, count_new_tokens, generate_records, load_for_generation, run_generate, stop_ids
from llmtune.modeling import context_length
from llmtune.dist import log
from llmtune.errors import ConfigError, DataError

CHAT_HELP = "chat: type a message and press Enter; /reset clears the history, /exit (or Ctrl-D) quits"


@dataclass
class GenerateInputs:
    """Where prompts come from and where completions go (I/O, so not part of the config)."""

    prompt: Optional[str] = None
    file: Optional[str] = None
    output: Optional[str] = None
    chat: bool = False


def run(cfg: RunConfig, inputs: GenerateInputs) -> GenerateStats:
    """Generate for ``inputs`` with the model and settings of ``cfg``; returns the timing figures.

    Raises:
        ConfigError: No prompt anywhere, conflicting inputs, or no model.
        DataError: An unreadable/empty prompt file, or a prompt longer than the model's context.
        ModelError: A model folder without weights or tokenizer, or any load failure.
    """
    if inputs.chat and (inputs.prompt is not None or inputs.file or inputs.output):
        raise ConfigError("--chat reads its messages from stdin; drop the prompt, --file and --output")
    prompts = None if inputs.chat else read_prompts(inputs, cfg.generate.prompt_column)
    model, tokenizer = load_for_generation(cfg, check_prompts=prompts)
    if cfg.generate.seed is not None:
        from transformers import set_seed

        set_seed(cfg.generate.seed)
    if inputs.chat:
        stats = chat_loop(model, tokenizer, cfg.generate)
    elif len(prompts) == 1 and cfg.generate.num_return_sequences == 1 and not inputs.output:
        stats = stream_one(model, tokenizer, prompts[0], cfg.generate)
    else:
        records, stats = generate_records(model, tokenizer, prompts, cfg.generate, cfg.train.batch_size)
        write_records(records, inputs.output)
    log(stats.summary())
    return stats


def stdin_is_tty() -> bool:
    """Whether stdin is a terminal (a separate function so tests can pretend it is)."""
    return sys.stdin.isatty()


def read_prompts(inputs: GenerateInputs, column: str = "prompt") -> list[str]:
    """The prompts of a non-chat run: from ``--file``, the argument, or piped stdin (whole text, one prompt).

    Raises:
        ConfigError: Both an argument and ``--file``, or nothing at all with a terminal on stdin.
        DataError: An empty prompt, an empty stdin, or a bad prompt file.
    """
    if inputs.file and inputs.prompt is not None:
        raise ConfigError("pass a prompt argument or --file, not both")
    if inputs.file:
        return read_prompt_file(Path(inputs.file), column)
    if inputs.prompt is not None:
        if not inputs.prompt.strip():
            raise DataError('the prompt is empty; pass some text, e.g. llmtune generate -m MODEL "Once upon a time"')
        return [inputs.prompt]
    if not stdin_is_tty():
        text = sys.stdin.read()
        if not text.strip():
            raise DataError("no prompt: stdin was empty; pipe some text in, or pass the prompt as an argument")
        return [text[:-1] if text.endswith("\n") else text]
    raise ConfigError('no prompt given; pass one as an argument (llmtune generate -m MODEL "Once upon a time"), '
                      'pipe it in (echo "text" | llmtune generate -m MODEL), use --file prompts.txt, or --chat')


def read_prompt_file(path: Path, column: str = "prompt") -> list[str]:
    """Prompts from ``.jsonl``/``.json`` (one object per line, ``column`` holds the prompt) or text (one per line).

    Blank lines are skipped. Raises DataError naming the file (and line) for anything unusable.
    """
    from llmtune.data.diagnose import check_not_empty, check_utf8

    if not path.exists():
        raise DataError(f"prompt file not found: {path}; check the path (one prompt per line, or .jsonl)")
    if path.is_dir():
        raise DataError(f"--file {path} is a folder; pass a .txt (one prompt per line) or .jsonl file")
    check_not_empty(path, "text")
    check_utf8(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix.lower() not in (".jsonl", ".json"):
        return [line for line in lines if line.strip()]
    return [_jsonl_prompt(line, number, path, column) for number, line in enumerate(lines, 1) if line.strip()]


def _jsonl_prompt(line: str, number: int, path: Path, column: str) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {number}: invalid JSON ({exc.msg}); write one object per line, "
                        'e.g. {"prompt": "..."}') from None
    if not isinstance(row, dict):
        raise DataError(f'{path} line {number}: expected an object such as {{"{column}": "..."}}, '
                        f"got {type(row).__name__}")
    if column not in row:
        import difflib

        close = difflib.get_close_matches(column, list(row), n=1)
        hint = f"--prompt-column {close[0]}" if close else "--prompt-column NAME"
        raise DataError(f"{path} line {number} has no '{column}' field; fields are: {', '.join(row) or 'none'}. "
                        f"Pass {hint}")
    value = row[column]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path} line {number}: '{column}' must be non-empty text, got {value!r:.40}")
    return value


def stream_one(model: Any, tokenizer: Any, prompt: str, g: GenerateConfig,
               write: Optional[Callable[[str], None]] = None) -> GenerateStats:
    """Generate one completion for ``prompt``, writing its text to stdout (or ``write``) as tokens arrive."""
    ids = tokenizer(prompt)["input_ids"]
    text, stats = _stream(model, tokenizer, ids, g, write or _stdout, stops=g.stop)
    (write or _stdout)("\n")
    return stats


def _stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _stream(model: Any, tokenizer: Any, ids: list[int], g: GenerateConfig, write: Callable[[str], None],
            stops: Sequence[str], warned: bool = False) -> tuple[str, GenerateStats]:
    """Stream one completion of ``ids``; returns its text (cut at the first stop) and the timing."""
    context = context_length(model.config, tokenizer)
    n_new = cap_new_tokens(g.max_new_tokens, len(ids), context, warn=not warned)
    writer = StopWriter(write, stops)
    streamer = TokenStream(tokenizer, writer.write)
    out = run_generate(model, tokenizer, [ids], g, n_new, streamer, stops)
    writer.close()
    stats = GenerateStats(completions=1, capped=n_new < g.max_new_tokens)
    stats.record(streamer, count_new_tokens(out[0].tolist(), stop_ids(model, tokenizer), tokenizer.pad_token_id))
    return writer.text, stats


def write_records(records: list[dict[str, Any]], output: Optional[str]) -> None:
    """JSON lines to ``output`` (written atomically) or to stdout."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if output is None:
        _stdout(text)
        return
    from llmtune.rundir import atomic_write_text

    path = Path(output)
    if path.is_dir():
        raise ConfigError(f"--output {output} is a folder; pass a file path such as {path / 'completions.jsonl'}")
    atomic_write_text(path, text)
    log(f"{len(records)} completions written to {path}")


def chat_loop(model: Any, tokenizer: Any, g: GenerateConfig, read: Callable[[str], str] = input,
              write: Optional[Callable[[str], None]] = None) -> GenerateStats:
    """Chat on stdin: each line is a user turn, the reply streams back; history is kept until /reset.

    Uses the tokenizer's chat template, or llmtune's builtin one when it has none (then the role
    markers also stop a reply, in case the model did not learn to end its turn with eos).
    """
    from llmtune.chat_template import prepare_chat

    write = write or _stdout
    stops = list(g.stop)
    stops += [m for m in prepare_chat(tokenizer) if m not in stops]
    log(CHAT_HELP)
    history: list[dict[str, str]] = []
    stats = GenerateStats()
    while True:
        try:
            line = read("you> ")
        except EOFError:
            break
        command = line.strip()
        if command == "/exit":
            break
        if command == "/reset":
            history.clear()
            log("history cleared")
            continue
        if not command:
            continue
        history.append({"role": "user", "content": line})
        ids = _fit_history(tokenizer, history, context_length(model.config, tokenizer))
        if ids is None:
            continue
        write("assistant> ")
        reply, turn = _stream(model, tokenizer, ids, g, write, stops, warned=stats.capped)
        write("\n")
        stats.merge(turn)
        history.append({"role": "assistant", "content": reply.strip()})
    return stats


def _fit_history(tokenizer: Any, history: list[dict[str, str]], context: Optional[int]) -> Optional[list[int]]:
    """Render the chat; drop the oldest turns while it does not fit the context (None: the last message alone is too long)."""
    from llmtune.chat_template import render_chat

    while True:
        ids = render_chat(tokenizer, history)
        if context is None or len(ids) < context:
            return ids
        if len(history) == 1:
            history.clear()
            log(f"that message is {len(ids)} tokens with the template, more than the model's {context}-token "
                "context; send a shorter one")
            return None
        del history[: 2 if len(history) > 2 else 1]
        log("dropped the oldest turn to fit the model's context")
