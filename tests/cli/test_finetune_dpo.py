"""End-to-end ``llmtune finetune --task dpo`` (TRL's DPOTrainer) and ``llmtune eval --task dpo`` on a tiny Llama.

The Llama and its BPE tokenizer are built in-process (as ``llmtune pretrain`` saves them); the
preference pairs are arithmetic prompts with a short right answer (chosen) and a wrong, rambling one.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from helpers import invoke, one_line_error, read_jsonl, save_tiny_llama, write_jsonl

pytest.importorskip("trl")


def _pairs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        rows.append({"prompt": f"Add {a} and {b}.\nAnswer:", "chosen": f" {a + b}",
                     "rejected": f" {a + b + 1} and {a + b + 1} and more"})
    return rows


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A random tiny LlamaForCausalLM + llmtune BPE tokenizer folder."""
    root = tmp_path_factory.mktemp("llama")
    save_tiny_llama(root, [json.dumps(r) for r in _pairs(200, 0)], vocab_size=320, min_frequency=2)
    return root


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefs")
    return write_jsonl(root / "train.jsonl", _pairs(24, 1)), write_jsonl(root / "dev.jsonl", _pairs(8, 2))


@pytest.fixture(scope="module")
def dpo_run(tiny_llama, prefs, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dpo"
    result = invoke("finetune", "-t", "dpo", "-m", tiny_llama, "-d", prefs[0], "--eval-dataset", prefs[1], "-o", out,
                    "--max-steps", "2", "--batch-size", "4", "--lr", "1e-2", "--set", "train.logging_steps=1")
    return result, out


def test_two_step_dpo_run_reports_reward_metrics(dpo_run):
    result, out = dpo_run
    assert result.exit_code == 0, result.output
    assert "preference data: pairs rows; TRL sigmoid loss, beta 0.1; reference: a frozen copy" in result.output
    m = json.loads((out / "metrics.json").read_text())
    assert (m["train_pairs"], m["eval_pairs"], m["train_pairs_truncated"], m["train_pairs_dropped"]) == (24, 8, 0, 0)
    assert 0.0 <= m["eval_rewards/accuracies"] <= 1.0 and m["eval_rewards/accuracies"] * 8 == round(m["eval_rewards/accuracies"] * 8)
    # The margin is the mean of chosen - rejected rewards, i.e. the difference of their means.
    assert m["eval_rewards/margins"] == pytest.approx(m["eval_rewards/chosen"] - m["eval_rewards/rejected"], abs=1e-6)
    assert m["eval_logps/chosen"] < 0 and m["eval_logps/rejected"] < m["eval_logps/chosen"]  # longer answer, lower
    assert math.isfinite(m["eval_loss"]) and math.isfinite(m["train_loss"])
    logged = read_jsonl(out / "logs" / "metrics.jsonl")
    train_steps = [r for r in logged if "rewards/accuracies" in r]
    assert [r["step"] for r in train_steps] == [1, 2]
    # Step 1 scores the starting model against itself: every reward 0, so the loss is exactly -log sigmoid(0).
    assert train_steps[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert train_steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert any("eval_rewards/accuracies" in r for r in logged)
    assert (out / "model.safetensors").is_file() and (out / "checkpoint-2").is_dir()


def test_eval_task_dpo_matches_the_trainers_log_probs(dpo_run, prefs, tmp_path):
    _, run = dpo_run
    result = invoke("eval", "-m", run, "-d", prefs[1], "--task", "dpo", "-o", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "ev" / "eval_metrics.json").read_text())
    trained = json.loads((run / "metrics.json").read_text())
    assert m["eval_pairs"] == 8
    # Same pairs, same final model: the summed response log-probs agree with TRL's evaluation.
    assert m["eval_logps_chosen"] == pytest.approx(trained["eval_logps/chosen"], rel=1e-4)
    assert m["eval_logps_rejected"] == pytest.approx(trained["eval_logps/rejected"], rel=1e-4)
    assert m["eval_logps_margin"] == pytest.approx(m["eval_logps_chosen"] - m["eval_logps_rejected"])
    records = read_jsonl(tmp_path / "ev" / "predictions.jsonl")
    assert m["eval_preference_accuracy"] == sum(r["correct"] for r in records) / 8


def test_lora_dpo_uses_the_base_as_reference_without_a_copy(tiny_llama, prefs, tmp_path):
    result = invoke("finetune", "-t", "dpo", "-m", tiny_llama, "-d", prefs[0], "--eval-dataset", prefs[1],
                    "-o", tmp_path / "run", "--max-steps", "2", "--batch-size", "4", "--lora", "--lr", "1e-2",
                    "--set", "train.logging_steps=1", "--set", "dpo.loss_type=ipo")
    assert result.exit_code == 0, result.output
    assert "TRL ipo loss" in result.output and "the starting model with its LoRA adapters disabled" in result.output
    first = next(r for r in read_jsonl(tmp_path / "run" / "logs" / "metrics.jsonl") if "rewards/margins" in r)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # new adapters: policy == base at step 1
    assert sorted(p.name for p in (tmp_path / "run" / "adapter").iterdir() if p.is_dir()) == []  # no "ref" copy
    assert (tmp_path / "run" / "model.safetensors").is_file()  # merged


def _first_loss(tiny_llama, data, out, *losses) -> float:
    result = invoke("finetune", "-t", "dpo", "-m", tiny_llama, "-d", data, "-o", out, "--max-steps", "1",
                    "--batch-size", "4", "--set", "train.logging_steps=1", *losses)
    assert result.exit_code == 0, result.output
    return next(r["loss"] for r in read_jsonl(out / "logs" / "metrics.jsonl") if "loss" in r)


def test_dpo_plus_sft_loss_sums_the_weighted_terms(tiny_llama, prefs, tmp_path):
    """At step 1 the policy is the reference: the sigmoid (DPO) term is ln 2, the SFT term the chosen answers' NLL."""
    def run(weights: str) -> float:
        return _first_loss(tiny_llama, prefs[0], tmp_path / weights.strip("[]").replace(",", "-"),
                           "--set", "dpo.loss_type=[sigmoid,sft]", "--set", f"dpo.loss_weights={weights}")

    dpo_only, one, two = run("[1,0]"), run("[1,1]"), run("[1,2]")
    assert dpo_only == pytest.approx(math.log(2), abs=1e-4)
    assert one - dpo_only > 0.5  # an untrained model's NLL per token of the chosen answers
    assert two - dpo_only == pytest.approx(2 * (one - dpo_only), rel=1e-3)


def _long_pairs() -> list[dict]:
    return [{"prompt": "Add the numbers " + " ".join(str(i) for i in range(40)) + ".\nAnswer:",
             "chosen": " 5", "rejected": " 6 and 6"}] * 6 + _pairs(6, 3)


def test_over_long_pairs_are_cut_prompt_first_and_counted(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "long.jsonl", _long_pairs())
    result = invoke("finetune", "-t", "dpo", "-m", tiny_llama, "-d", data, "--eval-dataset", data, "-o", tmp_path / "run",
                    "--max-steps", "1", "--batch-size", "4", "--set", "train.max_length=24")
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (m["train_pairs"], m["train_pairs_truncated"], m["train_pairs_dropped"]) == (12, 6, 0)
    assert "6 of 12 pairs are longer than 24 tokens and were cut (prompt first" in " ".join(result.output.split())


def _bad_data(root: Path) -> dict[str, Path]:
    rows = {
        "nochosen": [{"prompt": "a", "answer": "b", "rejected": "c"}],
        "same": [{"prompt": "a", "chosen": "b", "rejected": "b"}],
        "empty": [{"prompt": "a", "chosen": "b", "rejected": " "}],
        "turns": [{"prompt": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                   "chosen": [{"role": "assistant", "content": "c"}], "rejected": [{"role": "assistant", "content": "d"}]}],
        "conversation": [{"prompt": [{"role": "user", "content": "a"}], "chosen": [{"role": "assistant", "content": "c"}],
                          "rejected": [{"role": "assistant", "content": "d"}]}],
    }
    return {name: write_jsonl(root / f"{name}.jsonl", r * 4) for name, r in rows.items()}


BAD = [
    ("missing chosen", "nochosen", [], ["column", "chosen"]),
    ("chosen == rejected", "same", [], ["row 1: chosen and rejected are the same response"]),
    ("empty response", "empty", [], ["row 1: the rejected response is empty"]),
    ("turns do not alternate", "turns", [], ["row 1: message 2 is 'user' where 'assistant' was expected"]),
    ("no chat template", "conversation", [], ["row 1 is a conversation but the tokenizer has no chat template"]),
    ("beta <= 0", "same", ["--set", "dpo.beta=0"], ["dpo.beta"]),
    ("unknown loss", "same", ["--set", "dpo.loss_type=kto"], ["dpo.loss_type"]),
    ("weights do not match", "same", ["--set", "dpo.loss_type=[sigmoid,sft]", "--set", "dpo.loss_weights=[1]"],
     ["dpo.loss_weights", "needs 2 weight(s)"]),
    ("repeated loss", "same", ["--set", "dpo.loss_type=[sigmoid,sigmoid]"], ["dpo.loss_type", "different losses"]),
]


@pytest.mark.parametrize(("name", "data", "extra", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_dpo_input_one_line_exit_2(tiny_llama, tmp_path, name, data, extra, words):
    files = _bad_data(tmp_path)
    result = invoke("finetune", "-t", "dpo", "-m", tiny_llama, "-d", files[data], "--max-steps", "1",
                    "-o", tmp_path / "run", *extra)
    one_line_error(result, *words)
    assert not (tmp_path / "run").exists()


def test_dpo_is_registered_through_the_registry_only():
    from llmtune.tasks.base import training_task
    from llmtune.tasks.registry import TASKS, tasks_for

    assert TASKS["dpo"].module == "llmtune.tasks.dpo" and "dpo" in tasks_for("finetune") and "dpo" in tasks_for("eval")
    runners = Path(__file__).resolve().parents[2] / "llmtune" / "runs"
    assert not [p.name for p in runners.glob("*.py") if "dpo" in p.read_text().lower()]  # no runner names the task
    from llmtune.config.schema import RunConfig

    assert type(training_task(RunConfig(task="dpo"))).__name__ == "DpoTask"


def test_sharegpt_pairs_train_with_the_models_chat_template(tiny_llama, tmp_path):
    import shutil

    from llmtune.chat_template import BUILTIN_CHAT_TEMPLATE

    model = tmp_path / "chat-llama"
    shutil.copytree(tiny_llama, model)
    (model / "chat_template.jinja").write_text(BUILTIN_CHAT_TEMPLATE)
    rows = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": r["prompt"]}],
             "chosen": {"from": "gpt", "value": r["chosen"]}, "rejected": {"from": "gpt", "value": r["rejected"]}}
            for r in _pairs(12, 4)]
    data = tmp_path / "train.json"
    data.write_text(json.dumps(rows))
    result = invoke("finetune", "-t", "dpo", "-m", model, "-d", data, "--format", "sharegpt", "-o", tmp_path / "run",
                    "--max-steps", "1", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["data_format"] == "sharegpt" and m["train_pairs"] + m["eval_pairs"] == 12
    shown = invoke("data", "inspect", "-t", "dpo", "-d", data, "--format", "sharegpt", "-m", model,
                   "--show-masking", "1", "-n", "0")
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "<|system|>" in text and "<|assistant|>" in text and "train row 2" in text  # chosen row, rejected row


def test_dpo_run_resumes_from_its_checkpoint(tiny_llama, prefs, tmp_path):
    common = ["finetune", "-t", "dpo", "-m", tiny_llama, "-d", prefs[0], "--eval-dataset", prefs[1],
              "-o", tmp_path / "run", "--batch-size", "4", "--set", "train.logging_steps=1", "--set", "train.save_steps=1"]
    assert invoke(*common, "--max-steps", "1").exit_code == 0
    (tmp_path / "run" / "run_complete.json").unlink()  # as if killed after checkpoint-1 was written
    result = invoke(*common, "--max-steps", "2", "--resume", "last")
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.output and "step 1" in result.output
    steps = [r["step"] for r in read_jsonl(tmp_path / "run" / "logs" / "metrics.jsonl") if "rewards/accuracies" in r]
    assert steps == [1, 2]  # step 1 once (from the first run), step 2 after resuming
