"""What every command shares: error handling, config resolution, the consoles."""

import functools
import os
import sys
import traceback
from enum import Enum
from typing import Any, Callable, Iterable, Optional, TypeVar

import typer

from llmtune.cli._options import FLAG_PATHS, NON_CONFIG_PARAMS
from llmtune.errors import ConfigError, LlmtuneError

F = TypeVar("F", bound=Callable[..., Any])


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


def unmapped_params(command: str, names: Iterable[str]) -> list[str]:
    """The parameter names of ``command`` that are neither config flags nor declared as handled elsewhere.

    Args:
        command: The command name ``resolve_config`` gets (pretrain, finetune, eval, generate, data, tokenizer).
        names: The command's parameter names.

    Returns:
        The names in neither ``FLAG_PATHS`` nor ``NON_CONFIG_PARAMS`` (both in ``cli/_options.py``), sorted.
    """
    declared = NON_CONFIG_PARAMS["*"].keys() | NON_CONFIG_PARAMS.get(command, {}).keys()
    return sorted(name for name in names if name not in FLAG_PATHS and name not in declared)


def resolve_config(command: str, params: dict[str, Any]) -> Any:
    """Turn a command's parameters (its ``locals()`` before it binds anything else) into the validated RunConfig.

    Flag names map to config paths through ``FLAG_PATHS``; ``recipe``, ``set_`` and ``print_config`` are
    handled here, and the other parameters ``NON_CONFIG_PARAMS`` declares by their command. With no
    ``--recipe`` the config layer picks the default one. With ``--print-config`` the YAML is printed and
    the command exits.

    Raises:
        AssertionError: A parameter is neither mapped nor declared (a programmer error: a new flag must
            not be ignored without a word).
    """
    from llmtune.config import dump_config, load_config

    unmapped = unmapped_params(command, params)
    if unmapped:
        raise AssertionError(
            f"`llmtune {command}` parameter(s) {', '.join(unmapped)} are neither in FLAG_PATHS nor in "
            f"NON_CONFIG_PARAMS[{command!r}] (llmtune/cli/_options.py): map each to its config path or declare "
            "what handles it"
        )
    flags: dict[str, Any] = {}
    for name, value in params.items():
        if name not in FLAG_PATHS or value is None:
            continue
        if name == "columns":
            value = parse_columns(value)
        flags[FLAG_PATHS[name]] = value.value if isinstance(value, Enum) else value
    cfg = load_config(command, params.get("recipe"), flags, params.get("set_") or [])
    if params.get("print_config"):
        typer.echo(dump_config(cfg), nl=False)
        raise typer.Exit(0)
    return cfg


def train_command(command: str, params: dict[str, Any], run: Callable[[Any], Any],
                  dry_run: Callable[..., Any]) -> None:
    """What a training command does with its parameters: resolve the config, then dry-run, re-launch
    on several processes (``--num-processes``/``--accelerate-config``) or ``run`` here and summarise.

    The precision is checked before anything is launched, so ``--precision bf16`` on a CPU fails in one
    line instead of in every child process.
    """
    from llmtune.modeling import resolve_precision

    cfg = resolve_config(command, params)
    resolve_precision(cfg.train.precision)
    from llmtune.engine.trackers import check_trackers

    check_trackers(cfg.train.report_to)  # a missing tracker fails here, not after data and model loaded
    processes, accelerate_config = params.get("num_processes"), params.get("accelerate_config")
    from llmtune.launch import Machines

    count, rank = params.get("num_machines"), params.get("machine_rank")
    machines = Machines(1 if count is None else count, 0 if rank is None else rank,
                        params.get("main_process_ip"), params.get("main_process_port"))
    if params.get("dry_run"):
        world = (processes or 1) * machines.count if (processes or machines.several) else None
        dry_run(cfg, world_size=world)  # the runner's own preparation, model on the meta device
        return
    if accelerate_config or (processes is not None and processes != 1) or machines != Machines():
        from llmtune.launch import relaunch

        raise typer.Exit(relaunch(sys.argv[1:], processes, accelerate_config, machines))
    print_summary(command, run(cfg))


_SUMMARY_KEYS = (
    "eval_loss", "eval_perplexity", "eval_bits_per_char", "eval_bits_per_byte", "eval_accuracy", "eval_f1_macro", "eval_exact_match", "eval_f1",
    "train_loss", "train_steady_tokens_per_second", "train_steady_samples_per_second", "mfu", "peak_memory_bytes", "wall_seconds",
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
