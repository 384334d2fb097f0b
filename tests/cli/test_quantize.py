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
    assert record["quantized_embeddings"] == ["bert.embeddings.word_embeddings"] and not record["untied_embeddings"]
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


def int8_bytes(rows: int, cols: int) -> int:
    """Bytes of one int8 per-row weight as torchao saves it: int8 values, an fp32 scale and an int8 zero point a row."""
    return rows * cols + rows * (4 + 1)


@pytest.mark.parametrize("method", ["int8-dynamic", "int8-weight-only"])
def test_int8_folder_of_a_big_vocabulary_bert_is_under_035x_of_fp32(cli, tmp_path, method):
    """Word embeddings (8000 x 64) are ~90 % of this BERT's weights: quantized per row, the folder shrinks to ~0.28x.

    Every byte is counted by hand: the embedding and the linear layers hold int8 rows with their scale and zero
    point; biases, LayerNorms, position and token-type embeddings stay fp32.
    """
    import torch
    from safetensors import safe_open
    from transformers import BertConfig, BertForSequenceClassification

    vocab, hidden, inter, positions, labels = 8000, 64, 128, 64, 2
    torch.manual_seed(0)
    source = tmp_path / "bert"
    BertForSequenceClassification(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=inter,
                                             max_position_embeddings=positions, num_labels=labels)).save_pretrained(
        str(source))
    linears = [(hidden, hidden)] * 4 + [(inter, hidden), (hidden, inter), (hidden, hidden), (labels, hidden)]
    biases = sum(out for out, _ in linears)
    kept_fp32 = positions * hidden + 2 * hidden + 3 * 2 * hidden + biases  # positions, token types, 3 LayerNorms
    fp32 = 4 * (vocab * hidden + sum(o * i for o, i in linears) + kept_fp32)
    int8 = int8_bytes(vocab, hidden) + sum(int8_bytes(o, i) for o, i in linears) + 4 * kept_fp32
    out = tmp_path / "q"
    result = cli("quantize", source, "--method", method, "-o", out)
    assert result.exit_code == 0, result.output
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        tensors = [f.get_tensor(name) for name in f.keys()]  # noqa: SIM118 - safe_open is not iterable
    stored = sum(t.numel() * t.element_size() for t in tensors)
    assert stored == int8 and int8 / fp32 == pytest.approx(0.2761, abs=1e-4)
    record = json.loads((out / "compression.json").read_text())
    assert record["source_bytes"] == (source / "model.safetensors").stat().st_size > fp32
    assert record["bytes"] / record["source_bytes"] < 0.35  # the files, safetensors headers included
    assert record["quantized_embeddings"] == ["bert.embeddings.word_embeddings"]


def quantize_by_hand(model, method):
    """torchao's ``quantize_`` applied directly (what the folder should hold): linear layers with the method's
    config, then every ``nn.Embedding`` int8 per row; a tied head gets its own copy of the embedding first."""
    import torch
    from torchao.quantization import quantize_

    from llmtune.compress.methods import embedding_config, torchao_config

    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    if head is not None and head.weight is embedding.weight:
        head.weight = torch.nn.Parameter(embedding.weight.detach().clone())
    quantize_(model, torchao_config(method))
    quantize_(model, embedding_config(), filter_fn=lambda m, _: isinstance(m, torch.nn.Embedding))
    return model


@pytest.mark.parametrize("method", ["int8-dynamic", "int8-weight-only"])
def test_a_tied_llama_reloads_with_the_logits_and_greedy_text_of_torchao_itself(cli, tmp_path, method):
    """llmtune's presets tie the head to the embedding: the folder is untied, both quantized, and from_pretrained
    gives exactly the logits and greedy tokens of torchao's own quantize_ on the same model."""
    import torch
    from helpers import save_tiny_llama
    from transformers import AutoModelForCausalLM

    corpus = ["the cat sat on the mat", "a dog ran in the park", "birds fly over the river"] * 20
    model, tok = save_tiny_llama(tmp_path / "lm", corpus, tokenizer="char", hidden=64, extra_vocab=2000)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    out = tmp_path / "q"
    result = cli("quantize", tmp_path / "lm", "--method", method, "-o", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "compression.json").read_text())
    assert record["quantized_embeddings"] == ["model.embed_tokens", "lm_head"] and record["untied_embeddings"]
    assert record["quantized_layers"] == 2 * 7  # q, k, v, o, gate, up, down per layer; the head is listed above
    loaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    expected = quantize_by_hand(AutoModelForCausalLM.from_pretrained(str(tmp_path / "lm")).eval(), method)
    assert type(loaded.model.embed_tokens.weight).__name__ == "IntxUnpackedToInt8Tensor"
    assert type(loaded.lm_head.weight).__name__ == "Int8Tensor" and not loaded.config.tie_word_embeddings
    ids = torch.tensor([tok("the cat sat")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, expected(ids).logits)
        full = model(ids).logits
        assert (loaded(ids).logits - full).abs().max().item() < 0.05 * full.abs().max().item()
    greedy = {"max_new_tokens": 8, "do_sample": False, "attention_mask": torch.ones_like(ids)}
    assert torch.equal(loaded.generate(ids, **greedy), expected.generate(ids, **greedy))


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
