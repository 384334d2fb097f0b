"""Models that stop talking: SFT -> DPO (LoRA) -> ``export --merge`` -> ``generate`` ends every greedy answer with eos.

The tiny Llama and its BPE tokenizer (no chat template, as ``llmtune pretrain`` saves them) are built
in-process. SFT teaches a constant answer (" yes") and to stop after it (~20 steps for this 2-layer,
32-wide model; it gets 40); DPO then prefers " yes" over a rambling " yes yes yes" for a few LoRA
steps. The guards of ``export`` and ``generate`` (eos in ``generation_config``, the trained chat
template) are also checked on folders broken on purpose.
"""

from __future__ import annotations

import json
import random
import shutil

import pytest

from helpers import invoke, one_line_error, save_tiny_llama, write_jsonl

pytest.importorskip("trl")
pytest.importorskip("peft")

WORDS = "red blue green apple stone river cloud hammer window meadow tiger lemon".split()
TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"


def _questions(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"Q: {' '.join(rng.sample(WORDS, 2))}\nA:" for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A random tiny LlamaForCausalLM + llmtune BPE tokenizer folder."""
    root = tmp_path_factory.mktemp("llama")
    corpus = [json.dumps({"prompt": q, "completion": " yes"}) for q in _questions(200, 0)]
    save_tiny_llama(root, corpus, vocab_size=320, min_frequency=2)
    return root


@pytest.fixture(scope="module")
def round_trip(tiny_llama, tmp_path_factory):
    """SFT (40 steps) -> DPO with --lora (3 steps) -> export --merge; returns the folders and validation prompts."""
    root = tmp_path_factory.mktemp("trip")
    sft_rows = [{"prompt": q, "completion": " yes"} for q in _questions(64, 1)]
    pairs = [{"prompt": q, "chosen": " yes", "rejected": " yes yes yes"} for q in _questions(16, 2)]
    val = _questions(4, 3)
    result = invoke("finetune", "-t", "generation", "-m", tiny_llama, "-d", write_jsonl(root / "sft.jsonl", sft_rows),
                    "-o", root / "sft", "--max-steps", "40", "--batch-size", "8", "--lr", "1e-2")
    assert result.exit_code == 0, result.output
    result = invoke("finetune", "-t", "dpo", "-m", root / "sft", "-d", write_jsonl(root / "prefs.jsonl", pairs),
                    "-o", root / "dpo", "--lora", "--max-steps", "3", "--batch-size", "4", "--lr", "1e-3")
    assert result.exit_code == 0, result.output
    result = invoke("export", root / "dpo", "--merge", "-o", root / "merged")
    assert result.exit_code == 0, result.output
    return root, val, result


def test_every_greedy_answer_after_sft_dpo_merge_ends_with_eos(round_trip):
    from llmtune.config.schema import GenerateConfig, RunConfig
    from llmtune.decoding import load_for_generation, run_generate

    root, val, export_result = round_trip
    merged = root / "merged"
    assert "added to generation_config" not in export_result.output  # the runs already stop at eos
    cfg = RunConfig.model_validate({"model": {"name_or_path": str(merged)}})
    model, tok = load_for_generation(cfg)
    assert tok.eos_token_id in [model.generation_config.eos_token_id] + list(
        model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list) else [])
    seqs = [tok(p)["input_ids"] for p in val]
    rows = run_generate(model, tok, seqs, GenerateConfig(temperature=0.0), 8, None, []).tolist()
    for row in rows:
        assert tok.eos_token_id in row, tok.decode(row)  # stopped: eos generated before the 8-token cap
        answer = row[: row.index(tok.eos_token_id)]
        assert tok.decode(answer, skip_special_tokens=True) == " yes"


def test_generate_command_on_the_merged_model_answers_and_stops(round_trip):
    root, val, _ = round_trip
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(v.replace("\n", " ") for v in val[:2]) + "\n")
    out = root / "answers.jsonl"
    result = invoke("generate", "-m", root / "merged", "-f", prompts, "--output", out, "--max-new-tokens", "8",
                    "--temperature", "0")
    assert result.exit_code == 0, result.output
    assert "added to generation_config" not in result.output
    assert len(out.read_text().splitlines()) == 2


def _broken_copy(src, dst, *, eos_of_config=None, template=None):
    """A copy of the model folder ``src`` with another ``generation_config`` eos and/or a chat template."""
    from transformers import AutoTokenizer, GenerationConfig

    shutil.copytree(src, dst)
    if eos_of_config is not None:
        GenerationConfig(eos_token_id=eos_of_config).save_pretrained(str(dst))
    if template is not None:
        tok = AutoTokenizer.from_pretrained(str(dst))
        tok.chat_template = template
        tok.save_pretrained(str(dst))
    return dst


def test_export_adds_the_tokenizers_eos_to_generation_config(tiny_llama, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    src = _broken_copy(tiny_llama, tmp_path / "src", eos_of_config=tok.eos_token_id + 7)
    result = invoke("export", src, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "export: generation stops at the tokenizer's eos" in result.output
    saved = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert saved["eos_token_id"] == [tok.eos_token_id + 7, tok.eos_token_id]


def test_generate_adds_the_eos_in_memory(tiny_llama, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    src = _broken_copy(tiny_llama, tmp_path / "src", eos_of_config=tok.eos_token_id + 7)
    result = invoke("generate", "-m", src, "Q: red blue", "--max-new-tokens", "2")
    assert result.exit_code == 0, result.output
    assert "generate: generation stops at the tokenizer's eos" in result.output


def test_generate_gives_a_template_less_tokenizer_the_trained_template(tiny_llama, tmp_path):
    src = _broken_copy(tiny_llama, tmp_path / "src", template=TEMPLATE)
    result = invoke("generate", "-m", src, "--set", f"model.tokenizer={tiny_llama}", "Q: red blue",
                    "--max-new-tokens", "2")
    assert result.exit_code == 0, result.output
    assert "the tokenizer had no chat template; using the one the model was trained with" in result.output


def test_generate_refuses_a_tokenizer_with_another_template(tiny_llama, tmp_path):
    src = _broken_copy(tiny_llama, tmp_path / "src", template=TEMPLATE)
    other = _broken_copy(tiny_llama, tmp_path / "other", template=TEMPLATE + "!")
    result = invoke("generate", "-m", src, "--set", f"model.tokenizer={other}", "Q: red blue", "--max-new-tokens", "2")
    one_line_error(result, "chat template differs from the one the model was trained with", str(src))
