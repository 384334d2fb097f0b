"""``llmtune export --format onnx [--quantize int8]``: parity-checked ONNX folders that ``llmtune eval`` runs.

Tiny models are built in-process: a BERT classifier and QA model (hidden 64) with a WordPiece tokenizer,
and a Llama causal LM with a character tokenizer. Generating and serving exported causal LMs:
``test_onnx_causal_lm.py``.
"""

import json

import pytest
from helpers import classification_rows, one_line_error

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

LABELS = ("sports", "weather", "cooking")


def _bert_folder(root, head):
    import torch
    import transformers

    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    corpus = [r["text"] for r in classification_rows(300, seed=0)]
    tok = train_tokenizer(corpus, TokenizerConfig(type="wordpiece", vocab_size=200, min_frequency=1,
                                                  model_max_length=128), family="masked")
    torch.manual_seed(0)
    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {n: i for i, n in enumerate(LABELS)}}
    config = transformers.BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=128, max_position_embeddings=128,
                                     **(labels if head == "BertForSequenceClassification" else {}))
    getattr(transformers, head)(config).eval().save_pretrained(str(root))
    tok.save_pretrained(str(root))
    return root


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return _bert_folder(tmp_path_factory.mktemp("cls") / "model", "BertForSequenceClassification")


@pytest.fixture(scope="module")
def onnx_classifier(classifier, tmp_path_factory):
    from helpers import invoke

    out = tmp_path_factory.mktemp("onnx") / "cls-onnx"
    result = invoke("export", classifier, "--format", "onnx", "-o", out)
    assert result.exit_code == 0, result.output
    return out


def torch_logits(folder, texts):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits


def test_onnx_classifier_matches_pytorch_and_records_its_parity(onnx_classifier, classifier):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    assert sorted(p.name for p in onnx_classifier.iterdir() if not p.name.startswith("tokenizer")) == [
        "compression.json", "config.json", "model.onnx"]
    record = json.loads((onnx_classifier / "compression.json").read_text())
    assert record["format"] == "onnx" and record["method"] == "fp32" and len(record["parity"]) == 1
    assert "max |ONNX - PyTorch|" in record["parity"][0]
    texts = [r["text"] for r in classification_rows(6, seed=4)]
    batch = AutoTokenizer.from_pretrained(str(onnx_classifier))(texts, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(onnx_classifier / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    out = session.run(None, {k: v for k, v in batch.items() if k in names})[0]
    assert abs(out - torch_logits(classifier, texts).numpy()).max() < 1e-4


def test_eval_runs_an_onnx_classifier_with_the_models_own_scores(cli, classifier, onnx_classifier, cls_data, tmp_path):
    """Same rows, same predictions: eval of the ONNX folder and of the PyTorch folder agree exactly."""
    runs = {}
    for name, model in (("torch", classifier), ("onnx", onnx_classifier)):
        result = cli("eval", "--model", model, "-d", cls_data / "val.csv", "-o", tmp_path / name)
        assert result.exit_code == 0, result.output
        runs[name] = json.loads((tmp_path / name / "eval_metrics.json").read_text())
    assert runs["onnx"]["eval_accuracy"] == runs["torch"]["eval_accuracy"]
    assert runs["onnx"]["eval_loss"] == pytest.approx(runs["torch"]["eval_loss"], abs=1e-4)


def test_int8_onnx_is_smaller_and_within_its_tolerance(cli, classifier, tmp_path):
    out = tmp_path / "q"
    result = cli("export", classifier, "--format", "onnx", "--quantize", "int8", "-o", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "compression.json").read_text())
    assert record["method"] == "int8-dynamic" and len(record["parity"]) == 2
    assert not (out / "fp32").exists() and not list(tmp_path.glob(".*partial"))
    texts = [r["text"] for r in classification_rows(6, seed=4)]
    import torch
    from transformers import AutoTokenizer

    from llmtune.compress.onnx_model import load_onnx_model

    model = load_onnx_model(out, "AutoModelForSequenceClassification", {})
    with torch.no_grad():
        quantized = model(**AutoTokenizer.from_pretrained(str(out))(texts, padding=True, return_tensors="pt")).logits
    full = torch_logits(classifier, texts)
    assert (quantized - full).abs().max().item() <= 0.1 * full.abs().max().item()


def test_qa_and_causal_lm_heads_export_with_parity(cli, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    qa = _bert_folder(tmp_path / "qa", "BertForQuestionAnswering")
    result = cli("export", qa, "--format", "onnx", "-o", tmp_path / "qa-onnx")
    assert result.exit_code == 0, result.output
    corpus = ["the cat sat on the mat", "a dog ran in the park"] * 10
    tok = train_tokenizer(corpus, TokenizerConfig(type="char", vocab_size=60, min_frequency=1, model_max_length=128))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(tmp_path / "lm"))
    tok.save_pretrained(str(tmp_path / "lm"))
    result = cli("export", tmp_path / "lm", "--format", "onnx", "-o", tmp_path / "lm-onnx")
    assert result.exit_code == 0, result.output
    for name, checks in (("qa-onnx", 1), ("lm-onnx", 2)):  # the causal LM is also decoded through its cache
        record = json.loads((tmp_path / name / "compression.json").read_text())
        assert len(record["parity"]) == checks and record["kv_cache"] is (name == "lm-onnx")
        for line in record["parity"]:
            diff, tolerance = (float(x) for x in _numbers(line))
            assert diff <= tolerance
    one_line_error(cli("generate", "--model", tmp_path / "qa-onnx", "the cat", "--max-new-tokens", 3),
                   "BertForQuestionAnswering")


def _numbers(line):
    """(max diff, tolerance) from a parity line."""
    import re

    found = re.findall(r"= ([0-9.e+-]+) over .*\(tolerance ([0-9.e+-]+)\)", line)
    return found[0]


@pytest.mark.parametrize("case, words", [
    ("masked-lm", ["BertForMaskedLM", "ONNX export supports"]),
    ("quantize-without-onnx", ["--quantize applies to --format onnx"]),
    ("already-onnx", ["already compressed", "onnx"]),
])
def test_onnx_bad_inputs_fail_in_one_line(cli, classifier, onnx_classifier, tiny_bert, tmp_path, case, words):
    out = tmp_path / "out"
    args = {"masked-lm": [tiny_bert, "--format", "onnx"], "quantize-without-onnx": [classifier, "--quantize", "int8"],
            "already-onnx": [onnx_classifier, "--format", "onnx"]}[case]
    one_line_error(cli("export", *args, "-o", out), *words)
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
