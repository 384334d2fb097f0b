"""Config schema and loader: defaults < recipe YAML < flags < ``--set``."""

from llmtune.config.loader import dump_config, load_config, parse_set, parse_yaml, read_recipe
from llmtune.config.recipes import default_recipe, find_recipe, list_recipes, recipes_dir
from llmtune.config.schema import RunConfig, parse_duration

__all__ = [
    "RunConfig",
    "default_recipe",
    "dump_config",
    "find_recipe",
    "list_recipes",
    "load_config",
    "parse_duration",
    "parse_set",
    "parse_yaml",
    "read_recipe",
    "recipes_dir",
]
