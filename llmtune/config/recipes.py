"""Finding the YAML recipes shipped with llmtune (``recipes/`` in the repo, ``llmtune/recipes`` in the wheel)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from llmtune.config.schema import DEFAULT_PRETRAIN_ARCH
from llmtune.errors import ConfigError
from llmtune.tasks.registry import TASKS


def recipes_dir() -> Path:
    """The folder holding the shipped recipes.

    ``llmtune/recipes`` is a link to the top-level ``recipes/`` folder in a checkout and a real folder
    inside an installed wheel, so both layouts resolve through the package.
    """
    return Path(__file__).resolve().parent.parent / "recipes"


@dataclass(frozen=True)
class RecipeEntry:
    """A shipped recipe: its name (path under recipes/ without .yaml) and file."""

    name: str
    path: Path


# Folders of recipes/ that hold other tools' files: accelerate/ has Accelerate configs for --accelerate-config.
NOT_RECIPES = frozenset({"accelerate"})


def list_recipes() -> list[RecipeEntry]:
    """All shipped recipes, sorted by name."""
    root = recipes_dir()
    files = sorted(p for p in root.rglob("*.yaml")
                   if p.is_file() and p.relative_to(root).parts[0] not in NOT_RECIPES)
    return [RecipeEntry(p.relative_to(root).with_suffix("").as_posix(), p) for p in files]


def find_recipe(name_or_path: str) -> Path:
    """Resolve a recipe name (``pretrain/gpt2-tiny``) or a YAML path to a file.

    Raises:
        ConfigError: Neither a file nor a shipped recipe; lists close matches.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.suffix in (".yaml", ".yml") and ("/" in name_or_path or path.parent != Path(".")):
        if not (recipes_dir() / name_or_path).is_file():
            raise ConfigError(f"recipe file not found: {name_or_path}; check the path or run `llmtune recipes list`")
    entries = {entry.name: entry.path for entry in list_recipes()}
    key = name_or_path.removesuffix(".yaml").removesuffix(".yml")
    if key in entries:
        return entries[key]
    # Allow the short name when it is unambiguous: "gpt2-tiny" for "pretrain/gpt2-tiny".
    by_leaf = [name for name in entries if name.split("/")[-1] == key]
    if len(by_leaf) == 1:
        return entries[by_leaf[0]]
    close = difflib.get_close_matches(key, list(entries), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "run `llmtune recipes list` to see them"
    raise ConfigError(f"unknown recipe '{name_or_path}'; {hint}")


# Defaults tuned by measurement live in a recipe (documented in its header), used when no recipe is
# named, so `llmtune pretrain --dataset x.txt` gets the measured defaults. Finetune takes the task's
# default_recipe from the task registry; pretrain picks the tiny recipe of the requested arch (other
# sizes start from the plain presets); distill takes the recipe of its task where one is shipped.
TINY_PRETRAIN = {"gpt2": "pretrain/gpt2-tiny", "llama": "pretrain/llama-tiny", "bert": "pretrain/bert-tiny-mlm"}
DISTILL = {"classification": "distill/classification"}


def default_recipe(command: str, task: Any = None, arch: Any = None, size: Any = None) -> Optional[str]:
    """The recipe ``command`` starts from when the user names none.

    Args:
        command: The command being run (pretrain, finetune, ...).
        task: The requested ``task``, if any.
        arch: The requested ``model.arch``, if any (pretrain: default ``DEFAULT_PRETRAIN_ARCH``).
        size: The requested ``model.size``, if any (pretrain: default tiny).

    Returns:
        A shipped recipe name, or None for the schema defaults only (also for values the schema will
        reject, so the validation error names them).
    """
    if command == "pretrain" and size in (None, "tiny"):
        arch = arch or DEFAULT_PRETRAIN_ARCH
        return TINY_PRETRAIN.get(arch) if isinstance(arch, str) else None
    if command == "finetune" and isinstance(task, str) and task in TASKS:
        return TASKS[task].default_recipe
    if command == "distill" and isinstance(task, str):
        return DISTILL.get(task)
    return None
