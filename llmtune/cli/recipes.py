"""``llmtune recipes list|show|copy``: browse the shipped YAML recipes and copy one to edit."""

import shutil
from pathlib import Path
from typing import Annotated

import typer

from llmtune.cli._common import handle_errors

app = typer.Typer(no_args_is_help=True)


@app.command("list", help="Table of recipes: name, command/task, description.",
             epilog="Examples:\n\n  llmtune recipes list\n\n  llmtune pretrain --recipe pretrain/llama-tiny -o runs/llama-tiny")
@handle_errors
def list_() -> None:
    from rich.console import Console
    from rich.table import Table

    from llmtune.config import list_recipes, read_recipe

    table = Table(title="llmtune recipes", show_lines=False)
    for column in ("name", "command / task", "description"):
        table.add_column(column)
    for entry in list_recipes():
        data = read_recipe(str(entry.path))
        kind = "/".join(filter(None, (data.get("command"), data.get("task"))))
        table.add_row(entry.name, kind, str(data.get("description", "")))
    Console(soft_wrap=False).print(table)
    typer.echo("Run one: llmtune <command> --recipe NAME   |   copy to edit: llmtune recipes copy NAME my.yaml")


@app.command("show", help="Print a recipe's YAML (with the header showing the exact command).",
             epilog="Examples:\n\n  llmtune recipes show pretrain/llama-tiny\n\n  llmtune recipes show gpt2-tiny   (a short name)")
@handle_errors
def show(name: Annotated[str, typer.Argument(help="Recipe name, e.g. pretrain/gpt2-tiny.")]) -> None:
    from llmtune.config import find_recipe

    typer.echo(find_recipe(name).read_text(encoding="utf-8"), nl=False)


@app.command("copy", help="Copy a recipe to DEST to edit it (refuses to overwrite without --force).",
             epilog="Examples:\n\n  llmtune recipes copy pretrain/llama-tiny my-llama.yaml\n\n"
             "  llmtune pretrain --recipe my-llama.yaml -o runs/mine   (run the edited copy)")
@handle_errors
def copy(
    name: Annotated[str, typer.Argument(help="Recipe name, e.g. pretrain/gpt2-tiny.")],
    dest: Annotated[Path, typer.Argument(help="Destination file or folder.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite DEST if it exists.")] = False,
) -> None:
    from llmtune.config import find_recipe
    from llmtune.errors import ConfigError

    source = find_recipe(name)
    target = dest / source.name if dest.is_dir() else dest
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; pass --force to overwrite it or choose another destination")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    typer.echo(f"copied {name} -> {target}\nrun it: llmtune <command> --recipe {target}")
