"""Flags fail fast: every command parameter is a config flag or declared; default recipes live in the config layer."""

import inspect
import re
from typing import Any, Iterator

import pytest
import typer
from typer.testing import CliRunner

from llmtune.cli import _options as o
from llmtune.cli._common import handle_errors, resolve_config, unmapped_params
from llmtune.cli._options import FLAG_PATHS, NON_CONFIG_PARAMS
from llmtune.cli.app import app
from llmtune.config import default_recipe, dump_config, load_config

# A command resolves a config when its function calls resolve_config/train_command with its name.
_CONFIG_CALL = re.compile(r"\b(?:resolve_config|train_command)\(\s*[\"'](\w+)[\"']")
# Typer path -> the command name resolve_config gets, for every such command as of this test.
_KNOWN = {"pretrain": "pretrain", "finetune": "finetune", "eval": "eval", "generate": "generate",
          "data inspect": "data", "tokenizer train": "tokenizer"}


def _walk(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every leaf command of a Typer group as ("sub command", command), recursing into subgroups."""
    for name, command in group.commands.items():
        if getattr(command, "commands", None) is not None:
            yield from _walk(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), command


def _config_commands(typer_app: typer.Typer) -> dict[str, tuple[str, list[str]]]:
    """Typer path -> (resolve_config's command name, parameter names) for each command that builds a config."""
    found = {}
    for path, command in _walk(typer.main.get_command(typer_app)):
        match = _CONFIG_CALL.search(inspect.getsource(inspect.unwrap(command.callback)))
        if match:
            found[path] = (match.group(1), [param.name for param in command.params])
    return found


def _unmapped(typer_app: typer.Typer) -> dict[str, list[str]]:
    commands = _config_commands(typer_app)
    return {path: bad for path, (name, params) in commands.items() if (bad := unmapped_params(name, params))}


def test_the_walk_finds_every_config_command():
    found = _config_commands(app)
    assert {path: name for path, (name, _) in found.items() if path in _KNOWN} == _KNOWN
    assert "print_config" in found["data inspect"][1] and "prompt" in found["generate"][1]


def test_every_command_parameter_is_a_flag_or_declared():
    assert _unmapped(app) == {}


def test_the_tables_are_disjoint_and_name_real_parameters():
    params_by_name: dict[str, set[str]] = {}
    for name, params in _config_commands(app).values():
        params_by_name.setdefault(name, set()).update(params)
    every_param = set().union(*params_by_name.values())
    assert set(NON_CONFIG_PARAMS) - {"*"} <= set(params_by_name)
    for command, declared in NON_CONFIG_PARAMS.items():
        assert not set(declared) & set(FLAG_PATHS), command
        owners = params_by_name.values() if command == "*" else [params_by_name[command]]
        assert all(set(declared) <= params for params in owners), command
    assert set(FLAG_PATHS) <= every_param, "FLAG_PATHS maps a parameter no command has"


def _toy_app() -> typer.Typer:
    """An app with one command whose --shiny flag is in neither table."""
    toy = typer.Typer()

    @toy.command("pretrain")
    @handle_errors
    def pretrain(dataset: o.Dataset = None, shiny: bool = False, print_config: o.PrintConfig = False) -> None:
        resolve_config("pretrain", locals())

    @toy.command("other")
    def other() -> None:  # a second command keeps Typer from collapsing the app into its one command
        """Resolves no config."""

    return toy


def test_the_walk_reports_an_unmapped_flag():
    assert _unmapped(_toy_app()) == {"pretrain": ["shiny"]}


def test_an_unmapped_flag_is_refused_not_dropped():
    result = CliRunner().invoke(_toy_app(), ["pretrain", "--dataset", "x.txt", "--shiny", "--print-config"])
    assert result.exit_code == 1 and "unexpected AssertionError" in result.output
    assert "shiny" in result.output and "FLAG_PATHS" in result.output
    with pytest.raises(AssertionError, match=r"`llmtune finetune` parameter\(s\) chat, new_flag are neither"):
        resolve_config("finetune", {"task": "qa", "dataset": "x", "new_flag": 3, "chat": True})  # chat: generate's


def test_a_declared_parameter_is_not_a_config_key():
    cfg = resolve_config("generate", {"model": "m", "prompt": "Hi", "file": "p.txt", "output": None, "chat": True})
    assert cfg == resolve_config("generate", {"model": "m"}) and cfg.model.name_or_path == "m"


@pytest.mark.parametrize(("command", "task", "arch", "size", "expected"), [
    ("finetune", "classification", None, None, "classification/default"),
    ("finetune", "qa", None, None, "qa/default"),
    ("finetune", "generation", None, None, None),
    ("finetune", None, None, None, None),
    ("pretrain", None, None, None, "pretrain/llama-tiny"),
    ("pretrain", None, "gpt2", None, "pretrain/gpt2-tiny"),
    ("pretrain", None, "bert", "tiny", "pretrain/bert-tiny-mlm"),
    ("pretrain", None, "gpt2", "small", None),
    ("pretrain", None, None, "base", None),
    ("pretrain", None, "mamba", None, None),
    ("eval", "qa", None, None, None),
    ("generate", None, None, None, None),
    ("distill", "classification", None, None, "distill/classification"),
    ("distill", "lm", None, None, None),
])
def test_default_recipe(command, task, arch, size, expected):
    assert default_recipe(command, task, arch, size) == expected


def _cli_config(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--print-config"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(("args", "command", "flags", "sets"), [
    (["finetune", "-t", "classification", "-m", "m", "-d", "x.csv"], "finetune",
     {"task": "classification", "model.name_or_path": "m", "data.dataset": "x.csv"}, None),
    (["finetune", "-t", "qa", "-m", "m", "-d", "x.json"], "finetune",
     {"task": "qa", "model.name_or_path": "m", "data.dataset": "x.json"}, None),
    (["finetune", "-t", "generation", "-m", "m", "-d", "x.json", "--lora"], "finetune",
     {"task": "generation", "model.name_or_path": "m", "data.dataset": "x.json", "lora.enabled": True}, None),
    (["finetune", "--set", "task=qa", "-m", "m", "-d", "x.json"], "finetune",
     {"model.name_or_path": "m", "data.dataset": "x.json"}, ["task=qa"]),
    (["pretrain", "-d", "x.txt"], "pretrain", {"data.dataset": "x.txt"}, None),
    (["pretrain", "--arch", "gpt2", "-d", "x.txt"], "pretrain", {"model.arch": "gpt2", "data.dataset": "x.txt"}, None),
    (["pretrain", "--arch", "bert", "--size", "tiny", "-d", "x.txt"], "pretrain",
     {"model.arch": "bert", "model.size": "tiny", "data.dataset": "x.txt"}, None),
    (["pretrain", "--arch", "gpt2", "--size", "small", "-d", "x.txt"], "pretrain",
     {"model.arch": "gpt2", "model.size": "small", "data.dataset": "x.txt"}, None),
    (["pretrain", "--size", "small", "-d", "x.txt"], "pretrain", {"model.size": "small", "data.dataset": "x.txt"}, None),
])
def test_load_config_from_python_resolves_like_the_cli(args, command, flags, sets):
    assert dump_config(load_config(command, flags=flags, sets=sets)) == _cli_config(*args)


@pytest.mark.parametrize(("command", "flags", "sets", "recipe"), [
    ("finetune", {"task": "classification", "data.dataset": "x.csv"}, None, "classification/default"),
    ("finetune", {"data.dataset": "x.json"}, ["task=qa"], "qa/default"),
    ("finetune", {"task": "classification", "data.dataset": "x.json"}, ["task=qa"], "qa/default"),
    ("pretrain", {"data.dataset": "x.txt"}, None, "pretrain/llama-tiny"),
    ("pretrain", {"data.dataset": "x.txt"}, ["model.arch=gpt2"], "pretrain/gpt2-tiny"),
    ("pretrain", {"model.arch": "bert", "data.dataset": "x.txt"}, None, "pretrain/bert-tiny-mlm"),
])
def test_no_recipe_means_the_default_recipe(command, flags, sets, recipe):
    assert load_config(command, None, flags, sets) == load_config(command, recipe, flags, sets)


def test_default_recipe_values_by_hand():
    qa = load_config("finetune", flags={"task": "qa", "data.dataset": "x.json"})
    assert (qa.train.max_length, qa.model.dropout) == (384, 0.0)
    small = load_config("pretrain", flags={"model.arch": "gpt2", "data.dataset": "x.txt"}, sets=["model.size=small"])
    assert small.model.config == {}  # --set model.size=small leaves the tiny recipe out, as --size small does
    gen = load_config("finetune", flags={"task": "generation", "data.dataset": "x.json"})
    assert gen.model.dropout is None and gen.train.freeze_embeddings is False
