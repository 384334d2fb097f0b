"""Run directories: refuse to clobber finished runs, mark completion last, keep secrets out."""

import json
import os

import pytest

from llmtune.errors import ConfigError
from llmtune.rundir import RunDir, environment_record, is_complete, redact


def test_fresh_run_dir_layout(tmp_path):
    run = RunDir.prepare(tmp_path / "run")
    run.write_config("a: 1\n")
    run.write_env()
    run.log({"step": 1, "loss": 2.0})
    run.log({"step": 2, "loss": 1.5})
    run.write_metrics({"eval_loss": 1.2})
    assert not is_complete(run.path)
    run.mark_complete({"steps": 2})
    assert is_complete(run.path)
    lines = (run.path / "logs" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    assert json.loads((run.path / "metrics.json").read_text()) == {"eval_loss": 1.2}
    assert (run.path / "config.yaml").read_text() == "a: 1\n"


def test_finished_run_refused_without_overwrite(tmp_path):
    RunDir.prepare(tmp_path).mark_complete()
    with pytest.raises(ConfigError, match="holds a finished run; pass --overwrite"):
        RunDir.prepare(tmp_path)
    run = RunDir.prepare(tmp_path, overwrite=True)
    assert not is_complete(run.path) and run.path.is_dir()


def test_unfinished_run_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "checkpoint-1").mkdir()
    with pytest.raises(ConfigError, match="--resume"):
        RunDir.prepare(tmp_path)
    assert RunDir.prepare(tmp_path, resume=True).path == tmp_path
    assert (tmp_path / "checkpoint-1").is_dir()


def test_output_dir_is_a_file(tmp_path):
    target = tmp_path / "f"
    target.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        RunDir.prepare(target)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(ConfigError, match="permission denied"):
        RunDir.prepare(ro / "run")


def test_tokens_redacted(monkeypatch):
    assert redact("token hf_abcdefghijklmnop used") == "token hf_*** used"
    monkeypatch.setattr("sys.argv", ["llmtune", "--set", "x=hf_abcdefghijklmnopqrs"])
    record = environment_record()
    assert "hf_abcdefghijklmnopqrs" not in json.dumps(record)
    assert record["packages"]["transformers"]
    assert record["world_size"] == int(os.environ.get("WORLD_SIZE", "1"))
