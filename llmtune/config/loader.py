"""Recipe YAML -> explicit flags -> ``--set`` overrides -> one validated ``RunConfig``.

Precedence is defaults < recipe < flags < ``--set``. Every problem found along the way (YAML that is
not a mapping, unknown keys, wrong types, impossible combinations) is collected and raised as ONE
``ConfigError`` naming each dotted path, so a user fixes everything in one go.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, Optional

import yaml
from pydantic import BaseModel, ValidationError

from llmtune.config.recipes import default_recipe, find_recipe
from llmtune.config.schema import RunConfig, combination_problems
from llmtune.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``2e-5`` as a float (YAML 1.1 only accepts ``2.0e-5``)."""


_FLOAT = re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$|^[-+]?\d[\d_]*\.\d*$|^[-+]?\.\d+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML with the float fix; a syntax error becomes a ConfigError naming the line."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}{where}: invalid YAML ({problem}); fix the syntax and retry") from exc


def read_recipe(name_or_path: str) -> dict[str, Any]:
    """Load a recipe by name or path into a plain dict (it must be a mapping)."""
    path = find_recipe(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"recipe {path} is not UTF-8 text; save it as UTF-8") from exc
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"recipe {path} must be a YAML mapping of sections (data:, model:, train: ...), "
            f"not a {type(data).__name__}"
        )
    return data


def parse_set(items: Iterable[str]) -> list[tuple[str, Any]]:
    """Parse ``--set a.b=value`` items; values are YAML (numbers, booleans, lists, null)."""
    parsed: list[tuple[str, Any]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set '{item}' needs the form dotted.key=value, e.g. --set train.lr=3e-5")
        parsed.append((key, parse_yaml(raw, f"--set {key}") if raw.strip() else ""))
    return parsed


def set_dotted(tree: dict[str, Any], path: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``path == 'a.b.c'``, creating mappings on the way."""
    *parents, leaf = path.split(".")
    node = tree
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {path}: '{'.'.join(parents[: i + 1])}' is a value, not a section")
        node = child
    node[leaf] = value


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively by ``override`` (neither is modified)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "columns":
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    command: str,
    recipe: Optional[str] = None,
    flags: Optional[dict[str, Any]] = None,
    sets: Optional[Iterable[str]] = None,
) -> RunConfig:
    """Build the validated config for ``command``, exactly as the CLI does.

    Args:
        command: The command being run (pretrain, finetune, ...).
        recipe: Recipe name or YAML path, or None for the command's default recipe
            (``default_recipe`` of the task, arch and size that ``flags`` and ``sets`` ask for).
        flags: Explicit CLI flags as ``{"dotted.path": value}``; None values are ignored.
        sets: ``--set`` items (``dotted.key=value``).

    Returns:
        The validated RunConfig.

    Raises:
        ConfigError: Listing every invalid path at once.
    """
    tree: dict[str, Any] = {"command": command}
    problems: list[str] = []
    sets = list(sets or [])
    if not recipe:
        recipe = _default_recipe(command, flags or {}, parse_set(sets))
    if recipe:
        recipe_tree = read_recipe(recipe)
        recipe_command = recipe_tree.get("command", command)
        if recipe_command != command:
            problems.append(f"command: recipe '{recipe}' is for `llmtune {recipe_command}`, not `llmtune {command}`")
        tree = deep_merge(tree, {**recipe_tree, "command": command})
    for path, value in (flags or {}).items():
        if value is not None:
            set_dotted(tree, path, value)
    for path, value in parse_set(sets):
        set_dotted(tree, path, value)
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_problems(problems + validation_problems(exc))) from None
    problems += combination_problems(cfg)
    if problems:
        raise ConfigError(_format_problems(problems))
    return cfg


def _default_recipe(command: str, flags: dict[str, Any], set_items: list[tuple[str, Any]]) -> Optional[str]:
    """``default_recipe`` of the task, arch and size the flags and ``--set`` items ask for."""

    def requested(path: str) -> Any:
        value = flags.get(path)
        for key, item in set_items:  # --set wins over the flag, the last --set over earlier ones
            if key == path:
                value = item
        return getattr(value, "value", value)  # an Enum flag passed from Python

    return default_recipe(command, task=requested("task"), arch=requested("model.arch"), size=requested("model.size"))


def validation_problems(exc: ValidationError) -> list[str]:
    """One ``path: message`` string per pydantic error, with "did you mean" for unknown keys."""
    problems = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            problems.append(f"{path}: unknown key{_did_you_mean(err['loc'])}")
        else:
            problems.append(f"{path}: {err['msg']} (got {_short(err.get('input'))})")
    return problems


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """Suggest the closest valid key at the level where an unknown key sits."""
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None) if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    choices = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), choices, n=1, cutoff=0.6)
    prefix = ".".join(str(p) for p in loc[:-1])
    if close:
        return f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?"
    return f"; valid keys here: {', '.join(choices)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _format_problems(problems: list[str]) -> str:
    if len(problems) == 1:
        return f"invalid config: {problems[0]}"
    return f"invalid config ({len(problems)} problems): " + "; ".join(problems)


def dump_config(cfg: RunConfig) -> str:
    """The fully resolved config as YAML (what ``--print-config`` shows and run dirs store)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
