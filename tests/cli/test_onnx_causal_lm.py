"""ONNX causal LMs exported with their key/value cache run where the PyTorch model runs.

`llmtune generate` (streamed and batched), `llmtune serve`'s batch engine and `llmtune eval --task lm`
on an exported tiny Llama and GPT-2 give the PyTorch model's own greedy text and bits/char; the int8
graph generates; a folder exported before the cache is refused in one line.
"""

import json
import re

import pytest
from helpers import one_line_error, pretrain_lines, save_tiny_llama

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

PROMPTS = ["the red cat walks", "a quiet dog", "every horse likes the old garden ."]
NEW_TOKENS = 12


def _save_gpt2(root):
    """A random GPT-2 (seed 0, 2 layers, width 64) with the BPE tokenizer ``save_tiny_llama`` trains."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tok = save_tiny_llama(root, pretrain_lines(75))
    config = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=128,
                        initializer_range=0.1, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    for stale in root.glob("model*.safetensors"):
        stale.unlink()
    GPT2LMHeadModel(config).eval().save_pretrained(str(root))


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm(request, tmp_path_factory):
    """``(PyTorch folder, its fp32 ONNX export)`` for a tiny Llama (2 KV heads of 4) and a tiny GPT-2."""
    from helpers import invoke

    root = tmp_path_factory.mktemp(f"onnx-{request.param}")
    if request.param == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        save_tiny_llama(root / "lm", pretrain_lines(75), hidden=64, heads=4)
        import torch

        config = LlamaConfig.from_pretrained(str(root / "lm"))
        config.num_key_value_heads, config.initializer_range = 2, 0.1
        torch.manual_seed(0)
        LlamaForCausalLM(config).eval().save_pretrained(str(root / "lm"))
    else:
        _save_gpt2(root / "lm")
    result = invoke("export", root / "lm", "--format", "onnx", "-o", root / "onnx")
    assert result.exit_code == 0, result.output
    return root / "lm", root / "onnx"


def _generate(cli, model, *args):
    result = cli("generate", "--model", model, "--temperature", "0", "--max-new-tokens", NEW_TOKENS, *args)
    assert result.exit_code == 0, result.output
    return result


def _new_tokens(result):
    """The new-token count of generate's summary line."""
    return int(re.search(r"(\d+) new tokens in", result.output).group(1))


def test_the_export_records_its_cache_and_passes_the_cached_decode_check(lm):
    _, onnx = lm
    record = json.loads((onnx / "compression.json").read_text())
    assert record["kv_cache"] is True and len(record["parity"]) == 2
    assert "fp32, 8 cached greedy decode steps" in record["parity"][1]
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names[:5] == ["input_ids", "attention_mask", "position_ids", "past_key_values.0.key",
                         "past_key_values.0.value"] and len(names) == 3 + 2 * 2


def test_generate_gives_the_pytorch_models_greedy_text(cli, lm, tmp_path):
    torch_folder, onnx = lm
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    texts = {}
    for name, model in (("torch", torch_folder), ("onnx", onnx)):
        _generate(cli, model, "--file", prompts, "--output", tmp_path / f"{name}.jsonl", "--batch-size", "2")
        batched = [json.loads(line)["completion"] for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        streamed = _generate(cli, model, PROMPTS[0]).stdout
        texts[name] = (batched, streamed)
    assert texts["onnx"] == texts["torch"]
    assert len(set(texts["torch"][0])) == len(PROMPTS)  # three different completions, not one degenerate text


def test_int8_export_generates_within_max_tokens(cli, lm, tmp_path):
    torch_folder, _ = lm
    out = tmp_path / "q"
    result = cli("export", torch_folder, "--format", "onnx", "--quantize", "int8", "-o", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "compression.json").read_text())
    assert record["kv_cache"] is True and "int8, 8 cached greedy decode steps" in record["parity"][3]
    assert 1 <= _new_tokens(_generate(cli, out, PROMPTS[1])) <= NEW_TOKENS


def test_eval_lm_bits_per_char_matches_pytorch(cli, lm, tmp_path):
    (tmp_path / "val.txt").write_text("\n".join(pretrain_lines(40)[::3]) + "\n")
    metrics = {}
    for name, model in zip(("torch", "onnx"), lm):
        result = cli("eval", "--model", model, "--dataset", tmp_path / "val.txt", "--task", "lm", "-o", tmp_path / name,
                     "--set", "train.max_length=64")
        assert result.exit_code == 0, result.output
        metrics[name] = json.loads((tmp_path / name / "eval_metrics.json").read_text())
    assert metrics["onnx"]["eval_tokens"] == metrics["torch"]["eval_tokens"] > 100
    assert metrics["onnx"]["eval_bits_per_char"] == pytest.approx(metrics["torch"]["eval_bits_per_char"], abs=1e-3)


def test_serve_engine_decodes_the_onnx_graph_like_generate(lm):
    """Rows joining and leaving serve's running batch (one shared cache) get the PyTorch model's greedy tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmtune.compress.onnx_model import OrtCausalLM, load_onnx_model
    from llmtune.serve.engine import BatchEngine, Row, SamplingParams

    torch_folder, onnx = lm
    tok = AutoTokenizer.from_pretrained(str(onnx))
    model = load_onnx_model(onnx, "AutoModelForCausalLM", {})
    assert isinstance(model, OrtCausalLM)
    engine = BatchEngine(model, tok)
    rows = [Row(tok(p)["input_ids"], SamplingParams(temperature=0)) for p in PROMPTS]
    engine.add(rows[:2])
    for _ in range(3):
        engine.step()
    engine.add(rows[2:])  # a longer prompt joins a batch whose cache is 3 tokens along
    for _ in range(4):
        engine.step()
    engine.keep([1, 2])
    for _ in range(2):
        engine.step()
    assert [len(r.generated) for r in rows] == [8, 10, 7] and engine.can_join
    reference = AutoModelForCausalLM.from_pretrained(str(torch_folder)).eval()
    for row in rows:
        ids = torch.tensor([row.prompt_ids])
        out = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(row.generated),
                                 do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
        assert row.generated == out[0, ids.shape[1]:].tolist()


def test_a_folder_exported_without_the_cache_is_refused_in_one_line(cli, lm, tmp_path):
    import shutil

    _, onnx = lm
    old = tmp_path / "old"
    shutil.copytree(onnx, old)
    record = json.loads((old / "compression.json").read_text())
    del record["kv_cache"]  # what exports before the cache wrote
    (old / "compression.json").write_text(json.dumps(record))
    one_line_error(cli("generate", "--model", old, "the cat"), "without a key/value cache", "re-export")
    one_line_error(cli("serve", "--model", old), "without a key/value cache", "re-export")


def test_serve_answers_concurrent_requests_with_the_pytorch_models_text(cli, lm, tmp_path):
    """`llmtune serve --model ONNX` over HTTP: concurrent greedy completions are PyTorch's `generate` text."""
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from concurrent.futures import ThreadPoolExecutor

    from llmtune.config import load_config
    from llmtune.runs.serve import build_app
    from llmtune.serve.server import BackgroundServer

    torch_folder, onnx = lm
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    _generate(cli, torch_folder, "--file", prompts, "--output", tmp_path / "torch.jsonl")
    expected = [json.loads(line)["completion"] for line in (tmp_path / "torch.jsonl").read_text().splitlines()]
    cfg = load_config("serve", None, {"model.name_or_path": str(onnx), "serve.port": 0}, [])
    with BackgroundServer(build_app(cfg), cfg.serve) as url:
        def complete(prompt):
            body = {"model": "onnx", "prompt": prompt, "max_tokens": NEW_TOKENS, "temperature": 0}
            return httpx.post(f"{url}/v1/completions", json=body, timeout=30).json()["choices"][0]["text"]

        with ThreadPoolExecutor(len(PROMPTS)) as pool:
            assert list(pool.map(complete, PROMPTS * 2)) == expected * 2


def test_the_cached_decode_check_fails_a_graph_that_is_not_the_model(lm):
    """The graph held against another model of the same shape (other weights) fails the check in one ModelError."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from llmtune.compress.onnx_export import PARITY_TEXTS, decode_parity
    from llmtune.errors import ModelError

    torch_folder, onnx = lm
    tok = AutoTokenizer.from_pretrained(str(onnx))
    tok.pad_token = tok.pad_token or tok.eos_token
    same = AutoModelForCausalLM.from_pretrained(str(torch_folder)).eval()
    result = decode_parity(same, onnx, tok, "fp32")
    assert result.max_abs_diff < 1e-5 <= result.tolerance and result.rows == len(PARITY_TEXTS)
    torch.manual_seed(1)
    other = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(torch_folder))).eval()
    with pytest.raises(ModelError, match=r"^ONNX parity check failed: .*cached greedy decode steps") as error:
        decode_parity(other, onnx, tok, "fp32")
    assert "\n" not in str(error.value)


def test_a_sliding_window_cache_is_refused_in_one_line(cli, tmp_path):
    """Mistral with a sliding window keeps a window-sized cache that one growing graph cannot reproduce."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    _, tok = save_tiny_llama(tmp_path / "lm", pretrain_lines(20))
    config = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                           sliding_window=8, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    for stale in (tmp_path / "lm").glob("model*.safetensors"):
        stale.unlink()
    MistralForCausalLM(config).save_pretrained(str(tmp_path / "lm"))
    one_line_error(cli("export", tmp_path / "lm", "--format", "onnx", "-o", tmp_path / "out"),
                   "MistralForCausalLM", "DynamicSlidingWindowLayer", "full-attention causal LMs")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".*partial"))
