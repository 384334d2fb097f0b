"""The CLI shell: help, version, recipes, --print-config, and one-line errors with exit 2."""

import subprocess
import sys

import yaml

COMMANDS = ("tokenizer", "pretrain", "finetune", "eval", "generate", "recipes", "data")
HEAVY = ("torch", "transformers", "datasets", "evaluate", "peft", "accelerate")


def test_help_lists_every_command(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and result.output.startswith("llmtune ")


def test_python_dash_m_and_no_heavy_imports_at_startup():
    out = subprocess.run([sys.executable, "-m", "llmtune", "--help"], capture_output=True, text=True, check=True)
    assert "finetune" in out.stdout
    probe = "import sys, llmtune.cli.app; print(sorted(m for m in %r if m in sys.modules))" % (HEAVY,)
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_every_command_help_has_examples(cli):
    for args in (["pretrain"], ["finetune"], ["eval"], ["generate"], ["tokenizer", "train"], ["data", "inspect"]):
        result = cli(*args, "--help")
        assert result.exit_code == 0 and "Example" in result.output, args


def test_recipes_list_show_copy(cli, tmp_path):
    listed = cli("recipes", "list")
    assert listed.exit_code == 0
    assert "pretrain/gpt2-tiny" in listed.output and "classification" in listed.output
    shown = cli("recipes", "show", "pretrain/gpt2-tiny")
    assert shown.output.startswith("# llmtune pretrain --recipe pretrain/gpt2-tiny")
    dest = tmp_path / "mine.yaml"
    assert cli("recipes", "copy", "pretrain/gpt2-tiny", str(dest)).exit_code == 0
    assert dest.read_text() == shown.output
    again = cli("recipes", "copy", "pretrain/gpt2-tiny", str(dest))
    assert again.exit_code == 2 and "--force" in again.output
    assert cli("recipes", "copy", "pretrain/gpt2-tiny", str(dest), "--force").exit_code == 0


def test_print_config_resolves_precedence(cli, tmp_path):
    result = cli(
        "pretrain", "--recipe", "pretrain/gpt2-tiny", "--lr", "1e-3", "--set", "train.lr=2e-5",
        "--set", "model.config.n_layer=2", "--batch-size", "4", "--print-config",
    )
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.output)
    assert cfg["train"]["lr"] == 2e-5 and cfg["train"]["batch_size"] == 4
    assert cfg["model"]["config"]["n_layer"] == 2 and cfg["model"]["config"]["n_embd"] == 128  # merged
    assert cfg["model"]["arch"] == "gpt2"
    assert cfg["data"]["dataset"] == "builtin:text"


def _one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_unknown_recipe(cli):
    _one_line_error(cli("pretrain", "--recipe", "gpt2-tinyy"), "unknown recipe", "did you mean")


def test_set_without_equals(cli):
    _one_line_error(cli("pretrain", "--recipe", "gpt2-tiny", "--set", "train.lr"), "dotted.key=value")


def test_unknown_set_key(cli):
    _one_line_error(cli("pretrain", "--recipe", "gpt2-tiny", "--set", "train.learning_rate=1"), "train.learning_rate", "unknown key")


def test_wrong_value_type(cli):
    _one_line_error(cli("pretrain", "--recipe", "gpt2-tiny", "--set", "train.batch_size=lots"), "train.batch_size")


def test_debug_shows_traceback(monkeypatch, cli):
    monkeypatch.setenv("LLMTUNE_DEBUG", "1")
    result = cli("pretrain", "--recipe", "gpt2-tinyy")
    assert result.exit_code == 2 and "Traceback" in result.output


def test_debug_flag_sets_debug(cli, monkeypatch):
    monkeypatch.setenv("LLMTUNE_DEBUG", "0")  # recorded, so teardown restores the absence of the flag
    result = cli("--debug", "pretrain", "--recipe", "gpt2-tinyy")
    assert result.exit_code == 2 and "Traceback" in result.output


def test_pretrain_without_arch_uses_the_measured_llama_default(cli):
    cfg = yaml.safe_load(cli("pretrain", "--dataset", "x.txt", "--print-config").output)
    assert cfg["model"]["arch"] == "llama" and cfg["model"]["config"]["hidden_size"] == 128
    assert cfg["tokenizer"]["vocab_size"] == 1024 and cfg["train"]["max_length"] == 128


def test_finetune_classification_defaults_come_from_its_recipe(cli):
    cfg = yaml.safe_load(cli("finetune", "-t", "classification", "-m", "m", "-d", "x.csv", "--print-config").output)
    assert cfg["model"]["dropout"] == 0.0 and cfg["train"]["freeze_embeddings"] is True
    assert cfg["data"]["dataset"] == "x.csv" and cfg["model"]["name_or_path"] == "m"
    explicit = yaml.safe_load(cli("finetune", "-t", "classification", "-m", "m", "-d", "x.csv", "--set",
                                  "model.dropout=0.1", "--print-config").output)
    assert explicit["model"]["dropout"] == 0.1
    qa = yaml.safe_load(cli("finetune", "-t", "qa", "-m", "m", "-d", "x.json", "--print-config").output)
    assert qa["model"]["dropout"] == 0.0 and qa["train"]["doc_stride"] is None and qa["train"]["max_length"] == 384
    gen = yaml.safe_load(cli("finetune", "-t", "generation", "-m", "m", "-d", "x.json", "--print-config").output)
    assert gen["model"]["dropout"] is None and gen["train"]["freeze_embeddings"] is False


def test_pretrain_default_recipe_follows_arch(cli):
    for arch, recipe_task, tok_type in (("gpt2", "causal_lm", "bpe"), ("llama", "causal_lm", "bpe"), ("bert", "masked_lm", "wordpiece")):
        cfg = yaml.safe_load(cli("pretrain", "--arch", arch, "--dataset", "x.txt", "--print-config").output)
        assert cfg["model"]["arch"] == arch and cfg["task"] == recipe_task and cfg["tokenizer"]["type"] == tok_type
    small = yaml.safe_load(cli("pretrain", "--arch", "gpt2", "--size", "small", "--dataset", "x.txt", "--print-config").output)
    assert small["model"]["config"] == {}  # the tiny recipe's shape overrides do not leak into other sizes
