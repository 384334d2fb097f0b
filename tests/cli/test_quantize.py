"""``llmtune quantize``: torchao-quantized folders that every consumer loads, and its bad inputs.

Models are built in-process: a tiny BERT classifier (hidden 64, so every linear layer is wide enough for
torchao's int8 kernels) with a WordPiece tokenizer, and a tiny Llama with a character tokenizer.
"""

import json

import pytest
from helpers import classification_rows, one_line_error

pytest.importorskip("torchao")

LABELS = ("sports", "weather", "cooking")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A randomly initialised BertForSequenceClassification (3 labels) + tokenizer folder."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("cls") / "model"
    corpus = [r["text"] for r in classification_rows(300, seed=0)]
    tok = train_tokenizer(corpus, TokenizerConfig(type="wordpiece", vocab_size=200, min_frequency=1,
                                                  model_max_length=128), family="masked")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128,
                        id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    BertForSequenceClassification(config).eval().save_pretrained(str(root))
    tok.save_pretrained(str(root))
    return root


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny LlamaForCausalLM (hidden 64, 2 layers) + character tokenizer folder."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    corpus = ["the cat sat on the mat", "a dog ran in the park", "birds fly over the river"] * 20
    tok = train_tokenizer(corpus, TokenizerConfig(type="char", vocab_size=60, min_frequency=1, model_max_length=256))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    path = tmp_path_factory.mktemp("lm") / "model"
    AutoModelForCausalLM.from_config(config).eval().save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def logits(folder, texts):
    """Classifier logits of ``texts`` with the folder's own tokenizer (as from_pretrained loads it)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits


@pytest.mark.parametrize("method", ["int8-dynamic", "int8-weight-only"])
def test_quantized_classifier_round_trips_through_from_pretrained(cli, classifier, tmp_path, method):
    out = tmp_path / "q"
    result = cli("quantize", classifier, "--method", method, "-o", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "compression.json").read_text())
    # 2 layers x (query, key, value, attention output, intermediate, output) + pooler + classifier
    assert record["method"] == method and record["format"] == "torchao" and record["quantized_layers"] == 14
    assert set(record["versions"]) >= {"torch", "transformers", "torchao"}
    assert record["bytes"] == (out / "model.safetensors").stat().st_size < record["source_bytes"]
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "torchao"
    assert (out / "tokenizer.json").is_file() and not list(tmp_path.glob(".*partial"))
    texts = [r["text"] for r in classification_rows(8, seed=3)]
    full, quant = logits(classifier, texts), logits(out, texts)
    # int8 per-channel weights: logits move by far less than their own spread
    assert (full - quant).abs().max().item() < 0.05 * full.abs().max().item() + 1e-3
    assert (logits(out, texts) - quant).abs().max().item() == 0.0  # loading is deterministic


@pytest.fixture(scope="module")
def int8_classifier(classifier, tmp_path_factory):
    from helpers import invoke

    out = tmp_path_factory.mktemp("q8") / "cls-int8"
    result = invoke("quantize", classifier, "--method", "int8-dynamic", "-o", out)
    assert result.exit_code == 0, result.output
    return out


def test_eval_scores_a_quantized_classifier_like_from_pretrained(cli, classifier, int8_classifier, cls_data, tmp_path):
    """``llmtune eval`` predicts what the quantized model itself predicts (argmax of its logits)."""
    result = cli("eval", "--model", int8_classifier, "-d", cls_data / "val.csv", "-o", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ev" / "eval_metrics.json").read_text())
    rows = classification_rows(60, seed=2)
    predicted = logits(int8_classifier, [r["text"] for r in rows]).argmax(-1).tolist()
    accuracy = sum(LABELS[p] == r["label"] for p, r in zip(predicted, rows)) / len(rows)
    assert metrics["eval_accuracy"] == pytest.approx(accuracy)


def test_generate_runs_a_weight_only_quantized_llama(cli, llama, tmp_path):
    """``llmtune generate --temperature 0`` gives the quantized model's own greedy continuation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "lm-w8"
    result = cli("quantize", llama, "--method", "int8-weight-only", "-o", out)
    assert result.exit_code == 0, result.output
    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert type(model.model.layers[0].mlp.up_proj.weight).__name__ == "Int8Tensor"
    ids = torch.tensor([tok("the cat")["input_ids"]])
    expected = tok.decode(model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                         do_sample=False)[0, ids.shape[1]:], skip_special_tokens=True)
    result = cli("generate", "--model", out, "the cat", "--max-new-tokens", 8, "--temperature", 0)
    assert result.exit_code == 0, result.output
    assert expected in result.stdout


@pytest.mark.parametrize("case, words", [
    ("unknown-method", ["int9-dynamic", "int8-dynamic"]),
    ("int4-on-cpu", ["int4-weight-only", "CUDA", "CPU"]),
    ("already-quantized", ["already compressed", "torchao int8-dynamic"]),
    ("adapter-folder", ["LoRA adapter folder", "--merge"]),
    ("not-a-folder", ["not a folder"]),
])
def test_bad_inputs_fail_in_one_line_and_write_nothing(cli, classifier, int8_classifier, tmp_path, case, words):
    source, method = classifier, "int8-dynamic"
    if case == "unknown-method":
        method = "int9-dynamic"
    elif case == "int4-on-cpu":
        import torch
        if torch.cuda.is_available():
            pytest.skip("int4 weight-only runs on this machine's GPU")
        method = "int4-weight-only"
    elif case == "already-quantized":
        source = int8_classifier
    elif case == "adapter-folder":
        source = tmp_path / "adapter"
        source.mkdir()
        (source / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(classifier)}))
    elif case == "not-a-folder":
        source = tmp_path / "missing"
    out = tmp_path / "out"
    one_line_error(cli("quantize", source, "--method", method, "-o", out), *words)
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_output_folder_overlapping_or_not_empty_is_refused(cli, classifier, tmp_path):
    one_line_error(cli("quantize", classifier, "--method", "int8-dynamic", "-o", classifier / "q"), "overlaps")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    one_line_error(cli("quantize", classifier, "--method", "int8-dynamic", "-o", tmp_path / "full"), "--overwrite")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


def test_a_model_without_linear_layers_is_refused(cli, tmp_path):
    """GPT-2's Conv1D layers are not torch.nn.Linear: nothing to quantize, so nothing is written."""
    from transformers import GPT2Config, GPT2LMHeadModel

    source = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2, n_positions=32)).save_pretrained(
        str(source))
    out = tmp_path / "q"
    one_line_error(cli("quantize", source, "--method", "int8-weight-only", "-o", out),
                   "GPT2LMHeadModel", "no torch.nn.Linear layers", "int8-weight-only", "--format onnx")
    assert not out.exists() and not list(tmp_path.glob(".*partial"))



def test_finetune_refuses_a_quantized_folder(cli, int8_classifier, cls_data, tmp_path):
    out = tmp_path / "run"
    one_line_error(cli("finetune", "--task", "classification", "--model", int8_classifier, "--dataset",
                       cls_data / "train.csv", "-o", out), "already compressed", "fine-tune the full-precision")
    assert not out.exists()
