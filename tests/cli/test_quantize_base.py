"""``finetune --lora --quantize-base int8``: LoRA on a torchao int8 base, merged into the dequantized base.

The merged model (finetune's copy at the top of the run dir, and ``export --merge``) must give the
logits of the adapters applied on the int8 base they were trained on: merging dequantizes the base
instead of quantizing ``W + BA`` again.
"""

import json
import random
from pathlib import Path

import pytest
from helpers import invoke, one_line_error, save_tiny_llama, write_jsonl

pytest.importorskip("torchao")

WORDS = ["red", "blue", "green", "apple", "stone", "river", "cloud", "hammer", "window", "meadow", "tiger", "lemon"]


def _rows(n, seed):
    rng = random.Random(seed)
    return [{"prompt": f"Q: {' '.join(rng.sample(WORDS, 2))}\nA:", "completion": " yes"} for _ in range(n)]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny LlamaForCausalLM (hidden 64, tied embeddings) + BPE tokenizer folder."""
    root = tmp_path_factory.mktemp("llama")
    save_tiny_llama(root, [json.dumps(r) for r in _rows(200, 0)], vocab_size=320, min_frequency=2, hidden=64, heads=4)
    return root


@pytest.fixture(scope="module")
def qlora_run(llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("qlora")
    data = write_jsonl(root / "train.jsonl", _rows(32, 1))
    out = root / "run"
    result = invoke("finetune", "--task", "generation", "--model", llama, "--dataset", data, "--lora",
                    "--quantize-base", "int8", "--max-steps", "6", "--batch-size", "8", "--lr", "1e-2",
                    "-o", out)
    assert result.exit_code == 0, result.output
    return out, result


def _adapted_on_int8_base(llama, adapter):
    """The adapters on the int8 base, as during training (peft's TorchaoLoraLinear)."""
    import torchao.quantization as q
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, TorchAoConfig

    base = AutoModelForCausalLM.from_pretrained(str(llama), quantization_config=TorchAoConfig(
        quant_type=q.Int8WeightOnlyConfig()))
    assert type(base.model.layers[0].self_attn.q_proj.weight).__name__ == "Int8Tensor"
    return PeftModel.from_pretrained(base, str(adapter)).eval()


def test_merged_models_give_the_adapted_int8_models_logits(qlora_run, llama, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    run, result = qlora_run
    assert "merged the adapters into the dequantized int8 base" in result.output
    config = json.loads((run / "config.json").read_text())
    assert "quantization_config" not in config  # the merged copy is a plain fp32 model
    exported = tmp_path / "merged"
    assert invoke("export", run, "--merge", "-o", exported).exit_code == 0
    x = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        adapted = _adapted_on_int8_base(llama, run / "adapter")(input_ids=x).logits
        merged = {name: AutoModelForCausalLM.from_pretrained(str(path)).eval()(input_ids=x).logits
                  for name, path in (("run", run), ("export", exported))}
        base = AutoModelForCausalLM.from_pretrained(str(llama)).eval()(input_ids=x).logits
    assert (adapted - base).abs().max().item() > 1e-2  # the adapters learned something
    for name, logits in merged.items():
        assert (logits - adapted).abs().max().item() < 1e-4, name
    weight = AutoModelForCausalLM.from_pretrained(str(run)).model.layers[0].self_attn.q_proj.weight
    assert type(weight).__name__ == "Parameter" and weight.dtype == torch.float32


def test_adapters_train_in_fp32_on_the_int8_base(qlora_run):
    from safetensors import safe_open

    run, _ = qlora_run
    with safe_open(str(run / "adapter" / "adapter_model.safetensors"), "pt") as handle:
        dtypes = {str(handle.get_tensor(k).dtype) for k in handle.keys()}
        assert any("lora_A" in k for k in handle.keys())
    assert dtypes == {"torch.float32"}


@pytest.mark.parametrize("args, words", [
    (["--lora", "--quantize-base", "nf4"], ["nf4", "CUDA", "CPU", "--quantize-base int8"]),
    (["--quantize-base", "int8"], ["lora.quantize_base", "--lora"]),
    (["--lora", "--quantize-base", "int4"], ["lora.quantize_base"]),
])
def test_quantize_base_bad_inputs(cli, llama, tmp_path, args, words):
    import torch

    if "nf4" in args and torch.cuda.is_available():
        pytest.skip("nf4 runs on this machine's GPU")
    data = write_jsonl(tmp_path / "train.jsonl", _rows(8, 1))
    out = tmp_path / "run"
    one_line_error(cli("finetune", "--task", "generation", "--model", llama, "--dataset", data, *args, "-o", out),
                   *words)
    assert not out.exists()


def _int8_llama(folder):
    from transformers import AutoModelForCausalLM

    from llmtune.adapters import base_quantization

    return AutoModelForCausalLM.from_pretrained(str(folder), **base_quantization("int8", cuda=False))


@pytest.mark.parametrize("slice_rows", [128, 16])
def test_backward_keeps_the_int8_weight_not_an_fp32_copy(llama, monkeypatch, slice_rows):
    """torchao's int8 matmul converts W to fp32 above autograd, which would keep that copy for backward."""
    import torch

    import llmtune.adapters as adapters

    monkeypatch.setattr(adapters, "_SLICE_BYTES", slice_rows * 64 * 4)  # rows of 64 fp32 values: 1 or 8 slices
    layer = _int8_llama(llama).model.layers[0].mlp.up_proj  # 64 -> 128
    x = torch.randn(3, 64, requires_grad=True)
    with torch.no_grad():
        torchao_y = layer(x)

    def saved_shapes():
        shapes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
            layer(x).sum().backward()
        return shapes

    assert (64, 128) in saved_shapes()  # torchao's own path: an fp32 copy of W.T kept for backward
    x.grad = None
    assert adapters.prepare_quantized_base(layer) == 1
    assert saved_shapes() == []  # nothing saved: the int8 weight is the module's, the input needs no weight grad
    assert torch.allclose(layer(x), torchao_y, atol=1e-5)  # the sliced product equals torchao's own
    expected = torch.ones(3, 128) @ layer.weight.dequantize()  # d(sum(x W^T))/dx with the dequantized W
    assert torch.allclose(x.grad, expected, atol=1e-5)


def test_quantized_base_releases_the_checkpoint_mapping(llama, tmp_path):
    """The unquantized weights (embeddings, norms) are views of the mmapped checkpoint until copied out."""
    import shutil
    import sys

    import torch

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/maps")
    from llmtune.adapters import prepare_quantized_base

    folder = shutil.copytree(llama, tmp_path / "base")
    checkpoint = str(folder / "model.safetensors")

    def mapped():
        return checkpoint in open("/proc/self/maps").read()

    model = _int8_llama(folder)
    assert mapped()
    x = torch.tensor([[5, 6, 7]])
    with torch.no_grad():  # (a graph would keep the mapped embedding alive)
        before = model(input_ids=x).logits
    assert prepare_quantized_base(model) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    assert not mapped()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, before)


def test_quantizing_load_never_maps_the_checkpoint(llama, tmp_path):
    """Inside ``quantizing_load`` transformers reads the checkpoint with pread: no page of it is ever mapped."""
    import shutil
    import sys

    import torch
    import transformers.modeling_utils as loading

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/maps")
    from llmtune.adapters import base_quantization, quantizing_load

    seen = {}
    opener = loading.safe_open

    def spy(path, *args, **kwargs):  # whether the file is mapped once transformers has read a tensor of it
        handle = opener(path, *args, **kwargs)
        handle.get_slice(next(iter(handle.keys())))[:]
        seen[Path(path).parent.name] = str(path) in open("/proc/self/maps").read()
        return handle

    quantization = base_quantization("int8", cuda=False)
    loading.safe_open = spy
    try:
        plain = _int8_llama(shutil.copytree(llama, tmp_path / "plain"))
        with quantizing_load(quantization):
            lean = _int8_llama(shutil.copytree(llama, tmp_path / "lean"))
    finally:
        loading.safe_open = opener
    assert seen == {"plain": True, "lean": False}  # transformers' own load maps the file, the lean one does not
    x = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(lean(input_ids=x).logits, plain(input_ids=x).logits)
    with quantizing_load({}):  # anything but a torchao base: transformers' own loading
        assert loading.safe_open is opener


def test_save_merged_writes_the_adapted_int8_model_shard_by_shard(qlora_run, llama, tmp_path):
    """The merged fp32 weights are built one shard at a time; the folder loads as a plain model with the same logits."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmtune.adapters import save_merged

    run, _ = qlora_run
    adapted = _adapted_on_int8_base(llama, run / "adapter")
    x = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        expected = adapted(input_ids=x).logits
    out = tmp_path / "merged"
    one_block = 4 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64)  # fp32 bytes of one Llama block (hidden 64, MLP 128)
    save_merged(adapted, out, shard_bytes=one_block)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) >= 3 and all((out / f).is_file() for f in files)  # embeddings, block 0, block 1 (+ norm)
    assert "lm_head.weight" not in index["weight_map"]  # tied to the embeddings: saved once
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert type(merged.model.layers[1].mlp.down_proj.weight).__name__ == "Parameter"
    with torch.no_grad():
        assert (merged(input_ids=x).logits - expected).abs().max().item() < 1e-4
