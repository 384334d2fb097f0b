"""Every shipped recipe validates and starts with the exact command that runs it."""

import pytest

from llmtune.config import list_recipes, load_config, read_recipe

RECIPES = list_recipes()


def test_recipes_exist():
    names = {r.name for r in RECIPES}
    assert {"pretrain/gpt2-tiny", "pretrain/llama-tiny", "pretrain/bert-tiny-mlm", "classification/tiny-cpu"} <= names


@pytest.mark.parametrize("entry", RECIPES, ids=[r.name for r in RECIPES])
def test_recipe_validates(entry):
    data = read_recipe(str(entry.path))
    assert data.get("description"), "every recipe has a one-line description"
    cfg = load_config(data["command"], entry.name)
    assert cfg.command == data["command"]


@pytest.mark.parametrize("entry", RECIPES, ids=[r.name for r in RECIPES])
def test_recipe_header_shows_command(entry):
    first = entry.path.read_text().splitlines()[0]
    command = read_recipe(str(entry.path))["command"]
    assert first.startswith(f"# llmtune {command} ") and f"--recipe {entry.name}" in first
