"""Config loading: precedence, YAML floats, one error naming every bad path."""

import pytest

from llmtune.config import load_config, parse_duration, parse_set, parse_yaml
from llmtune.config.loader import deep_merge, set_dotted
from llmtune.errors import ConfigError


def _recipe(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_scientific_notation_is_float():
    assert parse_yaml("lr: 2e-5") == {"lr": 2e-5}
    assert parse_yaml("lr: 1E3")["lr"] == 1000.0
    assert parse_yaml("x: 10")["x"] == 10 and isinstance(parse_yaml("x: 10")["x"], int)
    assert parse_yaml("v: 1.5")["v"] == 1.5


def test_precedence_defaults_recipe_flags_set(tmp_path):
    recipe = _recipe(tmp_path, "command: finetune\ntask: classification\ndata: {dataset: a.csv}\ntrain: {lr: 1e-4, batch_size: 8, epochs: 2}\n")
    cfg = load_config("finetune", recipe, {"train.lr": 3e-4, "train.batch_size": None}, ["train.lr=5e-5"])
    assert cfg.train.lr == 5e-5  # --set beats the flag
    assert cfg.train.batch_size == 8  # unset flag leaves the recipe value
    assert cfg.train.epochs == 2.0  # recipe beats the default (3.0)
    assert cfg.train.seed == 42  # default


def test_flag_beats_recipe(tmp_path):
    recipe = _recipe(tmp_path, "task: classification\ndata: {dataset: a.csv}\ntrain: {lr: 1e-4}\n")
    assert load_config("finetune", recipe, {"train.lr": 3e-4}).train.lr == 3e-4


def test_all_problems_in_one_error_with_did_you_mean():
    with pytest.raises(ConfigError) as info:
        load_config(
            "finetune",
            None,
            {"task": "classification", "data.dataset": "x.csv"},
            ["train.lrr=1", "train.batch_size=abc", "model.nmae_or_path=x", "bogus=1"],
        )
    message = str(info.value)
    assert "4 problems" in message
    assert "train.lrr: unknown key; did you mean train.lr?" in message
    assert "train.batch_size" in message and "'abc'" in message
    assert "did you mean model.name_or_path?" in message
    assert "bogus: unknown key" in message


def test_impossible_combination_reported():
    with pytest.raises(ConfigError, match="lora.enabled"):
        load_config("pretrain", None, {"data.dataset": "t.txt", "lora.enabled": True, "model.arch": "gpt2"})


def test_finetune_requires_task():
    with pytest.raises(ConfigError, match="finetune needs a task"):
        load_config("finetune", None, {"data.dataset": "x.csv"})


def test_negative_and_zero_values_rejected():
    with pytest.raises(ConfigError) as info:
        load_config("finetune", None, {"task": "qa", "data.dataset": "x"}, ["train.batch_size=0", "train.lr=-1", "train.epochs=0"])
    for path in ("train.batch_size", "train.lr", "train.epochs"):
        assert path in str(info.value)


def test_set_parsing():
    assert parse_set(["a.b=3", "c=[1, 2]", "d=true", "e=null"]) == [("a.b", 3), ("c", [1, 2]), ("d", True), ("e", None)]
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_set(["train.lr"])


def test_set_dotted_and_deep_merge():
    tree = {"train": {"lr": 1}}
    set_dotted(tree, "train.seed", 3)
    assert tree == {"train": {"lr": 1, "seed": 3}}
    assert deep_merge({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}}) == {"a": {"x": 1, "y": 3}}
    with pytest.raises(ConfigError, match="is a value"):
        set_dotted({"train": 5}, "train.lr", 1)


def test_recipe_not_mapping(tmp_path):
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config("finetune", _recipe(tmp_path, "- a\n- b\n"))


def test_recipe_bad_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError, match="line 3: invalid YAML"):
        load_config("finetune", _recipe(tmp_path, "train:\n  lr: 1\n   x: 2\n"))


def test_recipe_for_other_command(tmp_path):
    with pytest.raises(ConfigError, match="is for `llmtune pretrain`"):
        load_config("finetune", _recipe(tmp_path, "command: pretrain\ntask: qa\ndata: {dataset: x}\n"))


def test_unknown_recipe_suggests():
    with pytest.raises(ConfigError, match="did you mean pretrain/gpt2-tiny"):
        load_config("pretrain", "pretrain/gpt2-tinny")


def test_short_recipe_name_resolves():
    assert load_config("pretrain", "gpt2-tiny").model.arch == "gpt2"


@pytest.mark.parametrize(("text", "seconds"), [("240s", 240), ("4m", 240), ("1h", 3600), ("1.5m", 90), ("30", 30)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "4 days", "-3s", "0s"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_bad_time_budget_is_config_error():
    with pytest.raises(ConfigError, match="train.time_budget"):
        load_config("pretrain", None, {"data.dataset": "t.txt", "train.time_budget": "soon"})
