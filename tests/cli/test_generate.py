"""`llmtune generate` end to end on a tiny Llama built in-process: outputs checked against model.generate."""

import json

import pytest
from helpers import save_tiny_llama

CORPUS = [
    "the quick brown fox jumps over the lazy dog.",
    "a small red hen walks to the river in the morning!",
    "every cat likes the quiet garden, but not the rain?",
    "The Old Man, the Sea; 0123456789 <|> - ' \"",
]
CONTEXT = 64
PROMPTS = ["the fox", "a small red hen walks", "every", "quiet garden, but not the", "dog"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """A 2-layer Llama (random weights, context 64) with a character tokenizer, saved like a run dir."""
    path = tmp_path_factory.mktemp("lm") / "model"
    model, tok = save_tiny_llama(path, CORPUS, tokenizer="char", vocab_size=120, tokenizer_max_length=1024,
                                 hidden=64, heads=4, context=CONTEXT, tied=False)
    return path, model, tok


def greedy(model, tok, prompt, n=20):
    """The reference: a plain model.generate greedy call, decoded."""
    import torch

    ids = torch.tensor([tok(prompt)["input_ids"]])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def test_single_prompt_streams_the_greedy_continuation(cli, lm):
    path, model, tok = lm
    result = _ok(cli("generate", "-m", str(path), "the fox", "--temperature", "0", "--max-new-tokens", "20"))
    expected = greedy(model, tok, "the fox")
    assert len(expected) >= 10  # a real continuation, not an early eos
    assert result.stdout == expected + "\n"  # the continuation only, not the prompt
    assert "tokens/s" in result.stderr and "first token after" in result.stderr


def test_stdin_prompt(cli, lm):
    path, model, tok = lm
    result = _ok(cli("generate", "-m", str(path), "--temperature", "0", "--max-new-tokens", "12", input="every\n"))
    assert result.stdout == greedy(model, tok, "every", 12) + "\n"


def test_stop_string_cuts_the_output(cli, lm):
    path, model, tok = lm
    full = greedy(model, tok, "the fox", 30)
    # Two characters first seen past the 10 the writer holds back for the longer stop string "never-there".
    stop = next(full[k:k + 2] for k in range(11, len(full) - 1) if full.index(full[k:k + 2]) == k)
    expected = full[: full.index(stop)]
    streamed = _ok(cli("generate", "-m", str(path), "the fox", "--temperature", "0", "--max-new-tokens", "30",
                       "--stop", stop, "--stop", "never-there"))
    assert streamed.stdout == expected + "\n"
    out = path.parent / "one.jsonl"  # --output takes the batch path: the cut must be the same there
    batched = _ok(cli("generate", "-m", str(path), "the fox", "--temperature", "0", "--max-new-tokens", "30",
                      "--stop", stop, "--output", str(out)))
    assert json.loads(out.read_text()) == {"prompt": "the fox", "completion": expected} and batched.stdout == ""


def test_prompt_file_batches_in_input_order_with_left_padding(cli, lm, tmp_path):
    path, model, tok = lm
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(PROMPTS[:3]) + "\n\n" + "\n".join(PROMPTS[3:]) + "\n")  # a blank line is skipped
    result = _ok(cli("generate", "-m", str(path), "--file", str(prompts_file), "--temperature", "0",
                     "--max-new-tokens", "15", "--batch-size", "2"))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["prompt"] for r in records] == PROMPTS
    assert [r["completion"] for r in records] == [greedy(model, tok, p, 15) for p in PROMPTS]


def test_jsonl_file_with_prompt_column_to_output_file(cli, lm, tmp_path):
    path, model, tok = lm
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "question": p}) + "\n" for i, p in enumerate(PROMPTS[:2])))
    out = tmp_path / "out" / "completions.jsonl"
    result = _ok(cli("generate", "-m", str(path), "-f", str(source), "--prompt-column", "question",
                     "--temperature", "0", "--max-new-tokens", "8", "--output", str(out)))
    assert result.stdout == ""
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == [{"prompt": p, "completion": greedy(model, tok, p, 8)} for p in PROMPTS[:2]]


def test_seed_makes_sampling_reproducible(cli, lm, tmp_path):
    path, _, _ = lm
    args = ["generate", "-m", str(path), "the fox", "--temperature", "1.5", "--top-k", "0", "--max-new-tokens", "25"]
    first, again, other = (_ok(cli(*args, "--seed", seed)).stdout for seed in ("3", "3", "4"))
    assert first == again and first != other
    source = tmp_path / "p.txt"
    source.write_text("the fox\nevery\n")
    several = _ok(cli("generate", "-m", str(path), "-f", str(source), "-n", "2", "--seed", "3",
                      "--temperature", "1.5", "--max-new-tokens", "10"))
    records = [json.loads(line) for line in several.stdout.splitlines()]
    assert [(r["prompt"], r["index"]) for r in records] == [("the fox", 0), ("the fox", 1), ("every", 0), ("every", 1)]
    assert records[0]["completion"] != records[1]["completion"]


def test_max_new_tokens_is_capped_by_the_context_with_a_warning(cli, lm):
    path, model, tok = lm
    prompt = "the quick brown fox jumps over the lazy dog."  # 44 characters = 44 tokens
    result = _ok(cli("generate", "-m", str(path), prompt, "--temperature", "0", "--max-new-tokens", "500",
                     "--set", "generate.min_new_tokens=500"))
    assert f"capped to {CONTEXT - 44}" in result.stderr
    completion = result.stdout[:-1]
    assert completion == greedy(model, tok, prompt, CONTEXT - 44) and len(completion) == CONTEXT - 44


def test_chat_uses_the_builtin_template_keeps_history_and_resets(cli, lm):
    path, model, tok = lm
    result = _ok(cli("generate", "-m", str(path), "--chat", "--temperature", "0", "--max-new-tokens", "10",
                     input="hello\n/reset\nhello\n/exit\n"))
    reply = greedy(model, tok, "<|user|>\nhello\n<|assistant|>\n", 10)
    for marker in ("<|user|>", "<|system|>", "<|assistant|>"):  # role markers end a reply (stop strings)
        reply = reply.split(marker)[0]
    # /reset emptied the history, so the second "hello" gets exactly the first reply.
    assert result.stdout == f"you> assistant> {reply}\nyou> you> assistant> {reply}\nyou> "
    assert "builtin" in result.stderr and "history cleared" in result.stderr


def test_chat_history_is_part_of_the_next_prompt(cli, lm):
    path, model, tok = lm
    result = _ok(cli("generate", "-m", str(path), "--chat", "--temperature", "0", "--max-new-tokens", "6",
                     input="hi\nok\n"))  # EOF quits too
    first = result.stdout.split("assistant> ")[1].split("\n")[0]
    rendered = f"<|user|>\nhi\n<|assistant|>\n{first.strip()}<|endoftext|>\n<|user|>\nok\n<|assistant|>\n"
    second = greedy(model, tok, rendered, 6)
    for marker in ("<|user|>", "<|system|>", "<|assistant|>"):
        second = second.split(marker)[0]
    assert result.stdout.split("assistant> ")[2] == f"{second}\nyou> "


def test_lora_adapter_folder_loads_on_its_base(cli, lm, tmp_path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    path, _, tok = lm
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(str(path))
    lora = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                      task_type="CAUSAL_LM")
    adapter = tmp_path / "adapter"
    get_peft_model(base, lora).save_pretrained(str(adapter))
    assert not (adapter / "config.json").exists() and (adapter / "adapter_config.json").is_file()
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(path)), str(adapter)).merge_and_unload()
    expected = greedy(merged.eval(), tok, "the fox", 15)
    assert expected != greedy(AutoModelForCausalLM.from_pretrained(str(path)), tok, "the fox", 15)
    result = _ok(cli("generate", "-m", str(adapter), "the fox", "--temperature", "0", "--max-new-tokens", "15"))
    assert result.stdout == expected + "\n"
    assert "LoRA adapter" in result.stderr


@pytest.fixture(scope="module")
def broken(lm, tmp_path_factory):
    import shutil

    path, _, _ = lm
    root = tmp_path_factory.mktemp("broken")
    no_weights = root / "no-weights"
    shutil.copytree(path, no_weights)
    for f in no_weights.glob("*.safetensors"):
        f.unlink()
    no_tok = root / "no-tokenizer"
    no_tok.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(path / name, no_tok / name)
    (root / "empty.txt").write_text("\n  \n")
    (root / "bad.jsonl").write_text('{"prompt": "a"}\n{"text": "b"}\n')
    return root


BAD = [
    ("model without weights", ["-m", "{root}/no-weights", "hi"], ["no model weights"]),
    ("model without tokenizer", ["-m", "{root}/no-tokenizer", "hi"], ["tokenizer"]),
    ("empty prompt file", ["-m", "{model}", "-f", "{root}/empty.txt"], ["empty"]),
    ("missing prompt file", ["-m", "{model}", "-f", "{root}/nope.txt"], ["not found"]),
    ("jsonl without the column", ["-m", "{model}", "-f", "{root}/bad.jsonl"], ["line 2", "--prompt-column"]),
    ("prompt longer than the context", ["-m", "{model}", "x" * 70], ["70 tokens", "context is 64"]),
    ("negative temperature", ["-m", "{model}", "hi", "--temperature", "-1"], ["generate.temperature"]),
    ("top_p zero", ["-m", "{model}", "hi", "--top-p", "0"], ["generate.top_p"]),
    ("top_p above one", ["-m", "{model}", "hi", "--top-p", "1.5"], ["generate.top_p"]),
    ("negative top_k", ["-m", "{model}", "hi", "--top-k", "-1"], ["generate.top_k"]),
    ("zero new tokens", ["-m", "{model}", "hi", "--max-new-tokens", "0"], ["generate.max_new_tokens"]),
    ("zero repetition penalty", ["-m", "{model}", "hi", "--repetition-penalty", "0"], ["generate.repetition_penalty"]),
    ("several greedy sequences", ["-m", "{model}", "hi", "--temperature", "0", "-n", "2"], ["temperature"]),
    ("no model", ["hi"], ["--model"]),
    ("empty stdin", ["-m", "{model}"], ["stdin was empty"]),
    ("chat with a prompt", ["-m", "{model}", "--chat", "hi"], ["--chat", "stdin"]),
]


@pytest.mark.parametrize(("name", "args", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2(cli, lm, broken, name, args, words):
    result = cli("generate", *[a.format(root=broken, model=lm[0]) for a in args])
    _one_error_line(result, words)


def test_no_prompt_with_a_terminal_says_how_to_pass_one(cli, lm, monkeypatch):
    import llmtune.runs.generate as runner

    monkeypatch.setattr(runner, "stdin_is_tty", lambda: True)
    _one_error_line(cli("generate", "-m", str(lm[0])), ["no prompt", "--file", "echo"])


def _one_error_line(result, words):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("[llmtune]")]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
