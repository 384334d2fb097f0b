"""What every command shares: error handling, config resolution, the consoles."""

import functools
import os
import sys
import traceback
from enum import Enum
from typing import Any, Callable, Optional, TypeVar

import typer

from llmtune.cli._options import FLAG_PATHS
from llmtune.errors import ConfigError, LlmtuneError

F = TypeVar("F", bound=Callable[..., Any])
_NOT_FLAGS = {"recipe", "set_", "print_config"}
# Defaults tuned by measurement live in a recipe (documented in its header), used when no --recipe is
# given, so `llmtune pretrain --dataset x.txt` gets the measured defaults. Pretrain picks the tiny recipe
# of the requested --arch; other sizes start from the plain presets.
_FINETUNE_DEFAULTS = {"classification": "classification/default", "qa": "qa/default"}
_TINY_PRETRAIN = {"gpt2": "pretrain/gpt2-tiny", "llama": "pretrain/llama-tiny", "bert": "pretrain/bert-tiny-mlm"}


def default_recipe(command: str, params: dict[str, Any]) -> Optional[str]:
    """The recipe a command uses when the user names none (None: schema defaults only)."""
    from llmtune.config.schema import DEFAULT_PRETRAIN_ARCH  # here, not at start-up: pydantic is ~0.1 s

    if command == "pretrain" and params.get("size") in (None, "tiny"):
        return _TINY_PRETRAIN.get(params.get("arch") or DEFAULT_PRETRAIN_ARCH)
    if command == "finetune":
        task = params.get("task")
        return _FINETUNE_DEFAULTS.get(getattr(task, "value", task))
    return None


def debug_enabled() -> bool:
    """True when tracebacks should be shown (``--debug`` or ``LLMTUNE_DEBUG=1``)."""
    return os.environ.get("LLMTUNE_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}


def fail(message: str, code: int) -> None:
    """Print one red line on stderr and exit with ``code``."""
    typer.secho(f"error: {' '.join(str(message).split())}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Map user errors to one line + exit 2, unexpected ones to a short line + exit 1.

    With ``--debug`` / ``LLMTUNE_DEBUG=1`` the traceback is printed as well.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:  # training turns the first Ctrl-C into a checkpoint (engine/reliability.py)
            fail("interrupted; a training run that saved a checkpoint continues with the same command and "
                 "--resume last", 130)
        except LlmtuneError as exc:
            if debug_enabled():
                traceback.print_exc(file=sys.stderr)
            fail(str(exc), exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for users
            if debug_enabled():
                traceback.print_exc(file=sys.stderr)
                fail(f"unexpected {type(exc).__name__}: {exc}", 1)
            fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)

    return wrapper  # type: ignore[return-value]


def parse_columns(text: Optional[str]) -> Optional[dict[str, str]]:
    """Parse ``--columns a=b,c=d`` into a mapping."""
    if text is None:
        return None
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        source, sep, target = part.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ConfigError(f"--columns '{part}' needs the form source=target, e.g. --columns review=text")
        mapping[source.strip()] = target.strip()
    return mapping


def resolve_config(command: str, params: dict[str, Any]) -> Any:
    """Turn a command's parameters (its ``locals()``) into the validated RunConfig.

    Known flag names map to config paths through ``FLAG_PATHS``; ``recipe``, ``set_`` and
    ``print_config`` are handled here. With ``--print-config`` the YAML is printed and the command exits.
    """
    from llmtune.config import dump_config, load_config

    flags: dict[str, Any] = {}
    for name, value in params.items():
        if name in _NOT_FLAGS or value is None or name not in FLAG_PATHS:
            continue
        if name == "columns":
            value = parse_columns(value)
        flags[FLAG_PATHS[name]] = value.value if isinstance(value, Enum) else value
    recipe = params.get("recipe") or default_recipe(command, params)
    cfg = load_config(command, recipe, flags, params.get("set_") or [])
    if params.get("print_config"):
        typer.echo(dump_config(cfg), nl=False)
        raise typer.Exit(0)
    return cfg


def train_command(command: str, params: dict[str, Any], run: Callable[[Any], Any]) -> None:
    """What a training command does with its parameters: resolve the config, then dry-run, re-launch
    on several processes (``--num-processes``/``--accelerate-config``) or ``run`` here and summarise.

    The precision is checked before anything is launched, so ``--precision bf16`` on a CPU fails in one
    line instead of in every child process.
    """
    from llmtune.modeling import resolve_precision

    cfg = resolve_config(command, params)
    resolve_precision(cfg.train.precision)
    processes, accelerate_config = params.get("num_processes"), params.get("accelerate_config")
    if params.get("dry_run"):
        from llmtune.runs.dryrun import dry_run

        dry_run(cfg, world_size=processes)
        return
    if accelerate_config or (processes is not None and processes != 1):
        from llmtune.launch import relaunch

        raise typer.Exit(relaunch(sys.argv[1:], processes, accelerate_config))
    print_summary(command, run(cfg))


_SUMMARY_KEYS = (
    "eval_loss", "eval_perplexity", "eval_bits_per_char", "eval_bits_per_byte", "eval_accuracy", "eval_f1_macro", "eval_exact_match", "eval_f1",
    "train_loss", "train_tokens_per_second", "train_samples_per_second", "mfu", "peak_memory_bytes", "wall_seconds",
)


def print_summary(command: str, result: Any) -> None:
    """A short table of the key metrics and where the outputs are (printed by the main process only)."""
    from rich.console import Console
    from rich.table import Table

    from llmtune.dist import is_main_process

    if not is_main_process():
        return

    table = Table(title=f"llmtune {command}: done", show_header=False)
    for key in _SUMMARY_KEYS:
        value = result.metrics.get(key)
        if value is not None:
            table.add_row(key, f"{value:,.4g}" if isinstance(value, float) else str(value))
    table.add_row("run dir", str(result.run_dir))
    Console().print(table)
