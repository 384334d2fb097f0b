"""Every `llmtune ...` line in the fenced bash blocks of README.md and docs/*.md parses, cheaply (nothing trains).

Commands with ``--print-config`` resolve their whole config (recipe, flags, ``--set``) and print it; cheap
read-only commands (``recipes list/show/copy``, ``--help``, ``--version``) run for real; the rest (export,
report, quickstart) must name only options their ``--help`` lists.
"""

import re
import shlex
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PRINT_CONFIG = {("pretrain",), ("finetune",), ("eval",), ("generate",), ("tokenizer", "train"), ("data", "inspect"),
                ("data", "clean")}
RUN_AS_IS = {("recipes", "list"), ("recipes", "show"), ("recipes", "copy"), ("--help",), ("--version",)}
FENCE = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.S | re.M)
DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def llmtune_commands(markdown: str) -> list[list[str]]:
    """The argument lists of every ``llmtune`` invocation in fenced bash blocks (pipes, ``&&`` and ``\\`` handled)."""
    commands = []
    for block in FENCE.findall(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"\s\|\s|\s&&\s", line):  # `echo x | llmtune ...`, `a && llmtune ...`
                words = shlex.split(part, comments=True)
                if words[:1] == ["llmtune"]:
                    commands.append(words[1:])
    return commands


def _kind(args: list[str]) -> tuple[str, ...]:
    head = tuple(a for a in args[:2] if not a.startswith("-") or a in ("--help", "--version"))
    for size in (2, 1):
        if head[:size] in PRINT_CONFIG | RUN_AS_IS:
            return head[:size]
    return head[:1]


def check_command(cli, args: list[str]) -> str:
    """'' when ``llmtune ARGS`` parses (as described in the module docstring), else why not."""
    kind = _kind(args)
    if kind in PRINT_CONFIG:
        result = cli(*args, "--print-config")
        ok = result.exit_code == 0 and "command:" in result.output
    elif kind in RUN_AS_IS:
        result = cli(*args)
        ok = result.exit_code == 0
    else:
        result = cli(*kind, "--help")
        unknown = [a.split("=")[0] for a in args if a.startswith("-") and a.split("=")[0] not in result.output]
        ok = result.exit_code == 0 and not unknown
    return "" if ok else f"llmtune {shlex.join(args)}: exit {result.exit_code}: {result.output[-400:]}"


def test_commands_are_found():
    commands = llmtune_commands((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert ["recipes", "list"] in commands
    assert ["generate", "-m", "runs/llama-tiny", "--temperature", "0", "--stop", "."] in commands  # after `echo ... |`
    sample = "```bash\nllmtune a --x 1   # note\necho hi | llmtune b \\\n  --y 2\nmake demo\n```\n"
    assert llmtune_commands(sample) == [["a", "--x", "1"], ["b", "--y", "2"]]


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_documented_commands_parse(doc: Path, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `recipes copy` writes here; nothing else writes
    commands = llmtune_commands(doc.read_text(encoding="utf-8"))
    failures = [problem for args in commands if (problem := check_command(cli, args))]
    assert not failures, "\n".join(failures)


def test_a_wrong_command_is_caught(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_command(cli, ["pretrain", "--recipe", "pretrain/llama-tiny"]) == ""
    assert "exit 2" in check_command(cli, ["pretrain", "--set", "train.lrr=1"])  # unknown config key
    assert check_command(cli, ["pretrain", "--epoch", "3"])  # unknown flag
    assert check_command(cli, ["export", "runs/x", "--merged", "-o", "out"])  # not in export --help
    assert check_command(cli, ["recipes", "show", "no-such-recipe"])


def _command_paths() -> list[tuple[str, ...]]:
    from llmtune.cli.app import app

    paths = [(c.name,) for c in app.registered_commands]
    for group in app.registered_groups:
        paths += [(group.name, c.name) for c in group.typer_instance.registered_commands]
    return paths


def test_every_help_ends_with_examples(cli):
    paths = _command_paths()
    assert ("quickstart",) in paths and ("recipes", "copy") in paths and len(paths) >= 12
    missing = []
    for path in paths:
        result = cli(*path, "--help")
        tail = result.output[result.output.rfind("╰"):]  # the text after the last option box: the epilog
        if result.exit_code != 0 or "Example" not in tail or "llmtune " + " ".join(path) not in tail:
            missing.append(" ".join(path))
    assert not missing, f"--help without examples at the bottom: {missing}"
