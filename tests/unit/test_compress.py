"""Pure pieces of llmtune.compress: method checks, the missing-extra line, how a folder is recognised."""

import json

import pytest

from llmtune.compress import quantization_of, require
from llmtune.compress.methods import METHODS, check_method, hf_quantization_config
from llmtune.errors import ConfigError


def test_a_missing_library_names_the_extra():
    with pytest.raises(ConfigError, match=r"--format onnx needs no_such_lib, which is not installed; "
                                          r"pip install 'llmtune\[compress\]'"):
        require("no_such_lib.sub", "--format onnx")


@pytest.mark.parametrize("method, cuda, words", [
    ("int8-dynamc", False, ["unknown quantization method 'int8-dynamc'", "did you mean 'int8-dynamic'"]),
    ("fp8", True, ["unknown quantization method 'fp8'", "int8-dynamic, int8-weight-only, int4-weight-only"]),
    ("int4-weight-only", False, ["needs a CUDA GPU", "only a CPU"]),
])
def test_methods_are_checked_before_anything_loads(method, cuda, words):
    with pytest.raises(ConfigError) as info:
        check_method(method, cuda)
    for word in words:
        assert word in str(info.value)


def test_every_method_runs_somewhere():
    check_method("int4-weight-only", cuda=True)
    for method in METHODS[:2]:
        check_method(method, cuda=False)


def test_folders_are_recognised_by_record_onnx_file_or_quantization_config(tmp_path):
    plain, record, onnx, hf = (tmp_path / n for n in ("plain", "record", "onnx", "hf"))
    for folder in (plain, record, onnx, hf):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    (record / "compression.json").write_text(json.dumps({"format": "torchao", "method": "int8-dynamic"}))
    (onnx / "model.onnx").write_bytes(b"")
    (hf / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "bitsandbytes"}}))
    assert [quantization_of(f) for f in (plain, record, onnx, hf)] == [None, "torchao int8-dynamic", "onnx",
                                                                        "bitsandbytes"]


def test_int8_configs_name_the_embedding_and_keep_biases_and_int4_leaves_embeddings_alone():
    pytest.importorskip("torchao")
    config = hf_quantization_config("int8-weight-only", "model.embed_tokens")
    per_module = config.quant_type.fqn_to_config
    assert list(per_module) == [r"re:.*\.bias", "model.embed_tokens", "_default"] and per_module[r"re:.*\.bias"] is None
    assert type(per_module["model.embed_tokens"]).__name__ == "IntxWeightOnlyConfig"
    assert type(per_module["_default"]).__name__ == "Int8WeightOnlyConfig" and config.modules_to_not_convert == []
    int4 = hf_quantization_config("int4-weight-only", "model.embed_tokens")
    assert type(int4.quant_type).__name__ == "Int4WeightOnlyConfig" and int4.modules_to_not_convert is None


def test_int8_embedding_lookup_gathers_rows_and_matches_the_whole_table():
    torch = pytest.importorskip("torch")
    quant = pytest.importorskip("torchao.quantization")
    from torchao.quantization.granularity import PerAxis

    from llmtune.compress.embedding import enable_row_lookup, gather_rows

    model = torch.nn.Sequential(torch.nn.Embedding(50, 8))
    with torch.no_grad():  # row r = r * 0.5 + column index / 8: per-row int8 keeps it within one step
        model[0].weight.copy_(torch.arange(50).float()[:, None] * 0.5 + torch.arange(8).float()[None, :] / 8)
    config = quant.IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
    quant.quantize_(model, config, filter_fn=lambda module, _: isinstance(module, torch.nn.Embedding))
    weight = model[0].weight
    indices = torch.tensor([[3, 49, 0], [3, 7, 7]])
    whole = weight.dequantize()[indices]
    assert torch.equal(gather_rows(weight, indices), whole)
    assert whole[0, 1, 0].item() == pytest.approx(24.5, abs=24.5 / 127)  # row 49, column 0
    enable_row_lookup()
    with torch.no_grad():
        assert torch.equal(model(indices), whole)
