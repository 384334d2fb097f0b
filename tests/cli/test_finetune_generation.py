"""End-to-end ``llmtune finetune --task generation`` and ``llmtune export`` on a tiny Llama built in-process.

The "pre-trained" model is what ``llmtune pretrain`` writes (LlamaForCausalLM with tied embeddings and
an llmtune BPE tokenizer without a chat template), built from a config in a second. The SFT data asks
a constant answer (" yes") to varied questions: learning it, and learning to stop after it, takes a
2-layer, 32-wide model ~20 steps (it gets 40), so the exported model must answer a new question with exactly
" yes" followed by eos.
"""

import json
import math
import random
import subprocess
import sys

import pytest
from helpers import invoke, read_jsonl, save_tiny_llama, write_jsonl

WORDS = "red blue green apple stone river cloud hammer window meadow tiger lemon".split()
SFT = ["--max-steps", "40", "--batch-size", "8", "--lr", "1e-2", "--set", "train.eval_steps=20",
       "--set", "train.logging_steps=5"]


def _qa_rows(n, seed):
    rng = random.Random(seed)
    return [{"prompt": f"Q: {' '.join(rng.sample(WORDS, 2))}\nA:", "completion": " yes"} for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A random tiny LlamaForCausalLM + llmtune BPE tokenizer folder, as `llmtune pretrain` saves it."""
    from llmtune.data.builtin import builtin_dir

    root = tmp_path_factory.mktemp("llama")
    chat = (builtin_dir("chat") / "train.jsonl").read_text().splitlines()
    save_tiny_llama(root, [json.dumps(r) for r in _qa_rows(200, 0)] + chat, vocab_size=400, min_frequency=2,
                    context=256)
    return root


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft-data")
    return write_jsonl(root / "train.jsonl", _qa_rows(64, 1)), write_jsonl(root / "val.jsonl", _qa_rows(8, 2))


@pytest.fixture(scope="module")
def sft_run(tiny_llama, qa_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "sft"
    train, val = qa_data
    result = invoke("finetune", "--task", "generation", "--model", tiny_llama, "--dataset", train,
                    "--eval-dataset", val, "-o", out, *SFT)
    return result, out


def _greedy(folder, prompt, n_new=8):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    return out[0, ids.shape[1]:].tolist(), tok


def test_sft_learns_the_response_and_to_stop(sft_run, qa_data):
    result, out = sft_run
    assert result.exit_code == 0, result.output
    assert "data format: prompt_completion (detected from the columns" in result.output
    assert "loss on responses only" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data_format"] == "prompt_completion"
    assert metrics["train_examples"] == 64 and metrics["train_examples_dropped"] == 0
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    evals = [r["eval_loss"] for r in read_jsonl(out / "logs" / "metrics.jsonl") if "eval_loss" in r]
    assert len(evals) == 2 and evals[1] < evals[0] < 2.0  # ~6 (ln 400) for the untrained model
    samples = read_jsonl(out / "samples.jsonl")
    assert [s["step"] for s in samples] == [20, 20, 20, 40, 40, 40]
    prompts = [r["prompt"] for r in read_jsonl(qa_data[1])[:3]]
    assert [s["prompt"] for s in samples[3:]] == prompts
    assert all(s["completion"] == " yes" and s["stopped"] for s in samples[3:])


def test_export_copies_the_model_which_answers_a_new_prompt_and_stops(sft_run, tmp_path):
    _, run = sft_run
    result = invoke("export", run, "--output-dir", tmp_path / "exported")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "exported").iterdir())
    assert names == ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json"]
    new_ids, tok = _greedy(tmp_path / "exported", "Q: lemon tiger\nA:")
    assert tok.decode(new_ids[:-1]) == " yes" and new_ids[-1] == tok.eos_token_id
    again = invoke("export", run, "--output-dir", tmp_path / "exported")
    assert again.exit_code == 2 and "--overwrite" in again.output
    merge = invoke("export", run, "--merge", "--output-dir", tmp_path / "merged")
    assert merge.exit_code == 2
    assert "holds no LoRA adapters" in merge.output and "drop --merge to copy the full model" in merge.output


def test_lora_chat_with_packing_then_export_merge_loads_without_peft(tiny_llama, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmtune.chat_template import BUILTIN_CHAT_TEMPLATE

    run = tmp_path / "lora"
    result = invoke("finetune", "--task", "generation", "--model", tiny_llama, "--dataset", "builtin:chat",
                    "--max-samples", "48", "--set", "data.max_eval_samples=4", "--lora", "--packing",
                    "--max-steps", "4", "--batch-size", "4", "--lr", "1e-2", "-o", run)
    assert result.exit_code == 0, result.output
    assert "no chat template: using llmtune's builtin one" in result.output
    assert "packing: 48 training examples in" in result.output
    assert "LoRA r=8 on 14 layers" in result.output  # q/k/v/o/gate/up/down x 2 layers; the tied LM head is not adapted
    assert (run / "adapter" / "adapter_config.json").is_file()
    merged = tmp_path / "merged"
    result = invoke("export", run, "--merge", "-o", merged)
    assert result.exit_code == 0, result.output
    assert not any(p.name.startswith("adapter") for p in merged.iterdir())
    assert AutoTokenizer.from_pretrained(str(merged)).chat_template == BUILTIN_CHAT_TEMPLATE
    bare = invoke("export", run / "adapter", "--merge", "-o", tmp_path / "from-adapter")
    assert bare.exit_code == 0, bare.output
    x = torch.tensor([[5, 6, 7, 8, 9]])
    logits = {name: AutoModelForCausalLM.from_pretrained(str(path)).eval()(x).logits for name, path in (
        ("export", merged), ("bare", tmp_path / "from-adapter"), ("run", run), ("base", tiny_llama))}
    assert torch.allclose(logits["export"], logits["run"], atol=1e-5)  # the same merge as finetune's own copy
    assert torch.equal(logits["export"], logits["bare"])
    assert (logits["export"] - logits["base"]).abs().max() > 1e-3  # the adapters changed the model
    code = ("import sys; sys.modules['peft'] = None\n"  # as if peft were not installed
            "from transformers import AutoModelForCausalLM\n"
            f"print(type(AutoModelForCausalLM.from_pretrained({str(merged)!r})).__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "LlamaForCausalLM", proc.stderr[-2000:]


def test_continued_pretraining_on_plain_text(tiny_llama, tmp_path):
    rng = random.Random(3)
    rows = [{"text": " ".join(rng.choice(WORDS) for _ in range(30))} for _ in range(40)]
    train = write_jsonl(tmp_path / "text.jsonl", rows)
    result = invoke("finetune", "--task", "generation", "--model", tiny_llama, "--dataset", train,
                    "--format", "text", "--max-steps", "3", "--batch-size", "4", "--set", "train.max_length=64",
                    "-o", tmp_path / "cpt")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "cpt" / "metrics.json").read_text())
    assert metrics["data_format"] == "text" and metrics["eval_bits_per_char"] > 0
    assert metrics["eval_bits_per_token"] == pytest.approx(metrics["eval_loss"] / math.log(2))


def test_data_inspect_shows_the_trained_tokens(tiny_llama, qa_data):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    first = read_jsonl(qa_data[0])[0]
    n_prompt, n_answer = len(tok(first["prompt"])["input_ids"]), len(tok(" yes")["input_ids"])
    result = invoke("data", "inspect", "--dataset", qa_data[0], "--task", "generation", "--model", tiny_llama,
                    "--show-masking", "1", "-n", "0")
    assert result.exit_code == 0, result.output
    assert f"train row 1: {n_prompt + n_answer + 1} tokens, {n_answer + 1} trained" in result.output
    assert "A: yes<|endoftext|>" in result.output


def _bad_rows(root):
    rows = {
        "noformat": [{"question": "a", "answer": "b"}],
        "badrole": [{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}],
        "twousers": [{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}],
        "emptyreply": [{"instruction": "Say hi.", "input": "", "output": ""}],
        "longprompt": [{"prompt": "word " * 300, "completion": " yes"}] * 4,
    }
    return {name: write_jsonl(root / f"{name}.jsonl", r * 4) for name, r in rows.items()}


def _raising_template_model(tiny_llama, root):
    import shutil

    folder = root / "no-system-template"
    shutil.copytree(tiny_llama, folder)
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{{ m['content'] }}{% endfor %}")
    return folder


BAD = [
    ("no recognisable format", "noformat", [], ["cannot tell the format", "question, answer", "chat (messages)"]),
    ("unknown role", "badrole", [], ["row 1: message 2 has role 'bot'"]),
    ("non-alternating turns", "twousers", [], ["message 2 is 'user' where 'assistant' was expected"]),
    ("empty response", "emptyreply", [], ["row 1 has an empty output"]),
    ("prompts fill max_length", "longprompt", ["--set", "train.max_length=32"],
     ["no example of", "train.max_length 32"]),
    ("lora targets match nothing", "noformat", ["--format", "text", "--lora", "--set", "lora.target_modules=[nope]"],
     ["lora.target_modules ['nope'] match no layer of LlamaForCausalLM", "q_proj"]),
]


@pytest.mark.parametrize(("name", "data", "extra", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_generation_input_one_line_exit_2(tiny_llama, tmp_path, name, data, extra, words):
    files = _bad_rows(tmp_path)
    if name == "lora targets match nothing":
        write_jsonl(files[data], [{"text": " ".join(WORDS * 3)}] * 8)
    result = invoke("finetune", "--task", "generation", "--model", tiny_llama, "--dataset", files[data],
                    "--max-steps", "1", "-o", tmp_path / "run", *extra)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in " ".join(result.output.split()), (word, result.output)
    assert not (tmp_path / "run").exists()  # a run that failed on its input leaves nothing behind


def test_a_chat_template_that_fails_shows_the_row(tiny_llama, tmp_path):
    model = _raising_template_model(tiny_llama, tmp_path)
    result = invoke("finetune", "--task", "generation", "--model", model, "--dataset", "builtin:chat",
                    "--max-samples", "8", "--max-steps", "1", "-o", tmp_path / "run")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "chat template failed on row 2 (System role not supported)" in text and "You are a helpful" in text
