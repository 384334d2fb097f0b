"""`llmtune prune` on tiny models built in-process: smaller shapes, exact parameter counts, loadable output, bad input."""

import json

import pytest
from helpers import invoke, one_line_error, pretrain_lines, save_bert_classifier, save_tiny_llama

NAMES = ["cooking", "sports", "weather"]


@pytest.fixture(scope="module")
def bert_classifier(tiny_bert, tmp_path_factory):
    """A 3-layer, 64-wide BertForSequenceClassification (intermediate 128) with the data's class names."""
    root = tmp_path_factory.mktemp("bert-cls")
    save_bert_classifier(root, tiny_bert, NAMES, hidden=64, layers=3, heads=4)
    return root


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A 3-layer Llama (hidden 32, 4 heads of 8, intermediate 64) on a BPE tokenizer of the LM toy text."""
    root = tmp_path_factory.mktemp("llama")
    save_tiny_llama(root, pretrain_lines(600), layers=3, heads=4, context=64)
    return root


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_bert_ffn_and_layer_pruning_saves_a_smaller_model_that_loads_and_evaluates(bert_classifier, cls_data,
                                                                                   tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "pruned"
    result = invoke("prune", bert_classifier, "--ffn", "0.25", "--layers", "1", "-d", cls_data / "train.csv",
                    "--eval-dataset", cls_data / "val.csv", "--calibration-samples", "16", "--batch-size", "8",
                    "-o", out)
    assert result.exit_code == 0, result.output
    before = AutoModelForSequenceClassification.from_pretrained(str(bert_classifier))
    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert model.config.num_hidden_layers == 2 and model.config.intermediate_size == 96
    layer = model.bert.encoder.layer[0]
    assert tuple(layer.intermediate.dense.weight.shape) == (96, 64) and tuple(layer.output.dense.weight.shape) == (64, 96)
    # one layer of 4*(64*64+64) attention + 2*64 + 2*64 norm + (64*128+128) + (128*64+64) gone, then 32 FFN
    # channels (32*64 + 32 in, 32*64 out) from each of the 2 layers left
    per_layer = 4 * (64 * 64 + 64) + 2 * 64 + (64 * 128 + 128) + (128 * 64 + 64) + 2 * 64
    assert _params(before) - _params(model) == per_layer + 2 * (32 * 64 + 32 + 32 * 64)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params_after"] == _params(model) and metrics["ffn_channels_removed_per_layer"] == 32
    assert len(metrics["removed_layers"]) == 1 and 0 <= metrics["pruned_eval_accuracy"] <= 1
    evaluated = invoke("eval", "--model", out, "--dataset", cls_data / "val.csv", "-o", tmp_path / "eval")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())["eval_accuracy"] == pytest.approx(
        metrics["pruned_eval_accuracy"])


def test_llama_head_ffn_layer_pruning_with_distilled_recovery(llama, text_files, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "pruned-llama"
    result = invoke("prune", llama, "--heads", "0.5", "--ffn", "0.5", "--layers", "1", "--recover-steps", "2",
                    "--recover-distill",
                    "-d", text_files / "train.txt", "--eval-dataset", text_files / "val.txt", "--batch-size", "4",
                    "--calibration-samples", "8", "--set", "train.max_length=32", "-o", out)
    assert result.exit_code == 0, result.output
    model = AutoModelForCausalLM.from_pretrained(str(out))
    c = model.config
    assert (c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.intermediate_size) == \
        (2, 2, 2, 8, 32)
    attn = model.model.layers[0].self_attn
    assert tuple(attn.q_proj.weight.shape) == (16, 32) and tuple(attn.o_proj.weight.shape) == (32, 16)
    assert tuple(model.model.layers[1].mlp.down_proj.weight.shape) == (32, 32)
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, c.vocab_size) and torch.isfinite(logits).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recover_steps"] == 2 and metrics["recovered_eval_loss"] > 0
    assert 0 < metrics["distill_kd_share"] < 1  # recovered by distilling from the unpruned model
    generated = invoke("generate", "the red cat", "--model", out, "--max-new-tokens", "3",
                       "--temperature", "0")
    assert generated.exit_code == 0, generated.output


@pytest.mark.parametrize("extra, words", [
    (["--ffn", "1.0"], ["prune.ffn", "less than 1"]),
    (["--ffn", "-0.1"], ["prune.ffn"]),
    (["--heads", "0.5"], ["prune.heads", "cannot be removed", "--ffn"]),
    (["--layers", "3"], ["prune.layers", "at most 2"]),
    ([], ["nothing to prune"]),
])
def test_bad_bert_requests_one_line_exit_2(bert_classifier, cls_data, tmp_path, extra, words):
    result = invoke("prune", bert_classifier, *extra, "-d", cls_data / "train.csv", "-o", tmp_path / "x")
    one_line_error(result, *words)
    assert not (tmp_path / "x").exists()


def test_removing_every_head_or_pruning_an_adapter_is_refused(llama, text_files, tmp_path):
    one_line_error(invoke("prune", llama, "--heads", "0.9", "-d", text_files / "train.txt", "-o", tmp_path / "a"),
                   "all 4 heads", "at most 0.75")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(llama)}))
    one_line_error(invoke("prune", adapter, "--ffn", "0.5", "-d", text_files / "train.txt", "-o", tmp_path / "b"),
                   "LoRA adapter", "merge")
