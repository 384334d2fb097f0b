"""End-to-end ``llmtune eval`` and ``llmtune report`` on tiny models built in-process.

The classifier is fine-tuned with the CLI exactly as test_finetune_classification does, so
evaluating it on the same data must reproduce the metrics its run wrote. Other models get
weights set by hand (a head that always answers one class) or are scored directly with the model
to check the numbers (bits per character of a causal LM).
"""

import csv
import json
import math
import shutil

import pytest
from helpers import CLASSES, classification_rows, invoke, one_line_error, read_jsonl, write_csv, write_jsonl

LM_LINES = [f"the {a} {n} walks to the {p} ." for a in ("red", "old", "shy") for n in ("cat", "dog")
            for p in ("hill", "lake")]
SHORT = ["--set", "train.max_length=32"]


@pytest.fixture(scope="module")
def finetuned(tiny_bert, cls_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "cls"
    result = invoke("finetune", "--task", "classification", "--model", tiny_bert, "--dataset", cls_data / "train.csv",
                    "--eval-dataset", cls_data / "val.csv", "-o", out, "--epochs", "1", "--lr", "3e-3",
                    "--batch-size", "8", "--set", "model.config={initializer_range: 0.2}", "--set",
                    "train.freeze_embeddings=false", "--set", "train.logging_steps=5", "--set", "train.eval_steps=10",
                    "--set", "train.save_steps=1000", *SHORT)
    assert result.exit_code == 0, result.output
    return out


def test_eval_reproduces_the_training_metrics(finetuned, cls_data):
    result = invoke("eval", "--model", finetuned, "--dataset", cls_data / "val.csv", "--batch-size", "7")
    assert result.exit_code == 0, result.output
    assert "task: classification (from the run's config.yaml)" in result.output
    trained = json.loads((finetuned / "metrics.json").read_text())
    out = finetuned / "eval"  # the default output folder of a run dir
    evaluated = json.loads((out / "eval_metrics.json").read_text())
    for key in ("eval_accuracy", "eval_f1_macro", "eval_f1_micro", "eval_f1_weighted", "eval_precision_macro"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-12), key
    assert evaluated["eval_loss"] == pytest.approx(trained["eval_loss"], rel=1e-5)
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"] and evaluated["labels"] == sorted(CLASSES)
    assert evaluated["per_class"] == trained["per_class"]
    records = read_jsonl(out / "predictions.jsonl")
    val = list(csv.DictReader(open(cls_data / "val.csv")))
    assert [r["input"] for r in records] == [r["text"] for r in val]  # data order, although scored longest first
    assert [r["reference"] for r in records] == [r["label"] for r in val]
    assert all(r["correct"] == (r["reference"] == r["prediction"]) for r in records)
    assert sum(r["correct"] for r in records) / len(val) == pytest.approx(evaluated["eval_accuracy"])
    report = (out / "report.md").read_text()
    assert f"| eval_accuracy | {evaluated['eval_accuracy']:.4g} |" in report and "| gold \\ predicted |" in report
    for name in ("confusion_matrix.png", "per_class_f1.png"):
        assert (out / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    assert (out / "run_complete.json").is_file()
    assert (finetuned / "plots" / "curves.png").read_bytes()[:4] == b"\x89PNG"  # drawn when training finished
    again = invoke("eval", "--model", finetuned, "--dataset", cls_data / "val.csv")
    one_line_error(again, "finished run", "--overwrite")


def test_report_rebuilds_plots_and_report(finetuned):
    shutil.rmtree(finetuned / "plots")
    result = invoke("report", finetuned)
    assert result.exit_code == 0, result.output
    for name in ("curves.png", "confusion_matrix.png", "per_class_f1.png"):
        assert (finetuned / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    report = (finetuned / "report.md").read_text()
    evals = [r for r in read_jsonl(finetuned / "logs" / "metrics.jsonl") if "eval_loss" in r]
    assert len(evals) == 3  # at steps 10, 20 and 25 (the end)
    history = report.split("## Evaluations during training")[1].split("##")[0]
    assert len([line for line in history.splitlines() if line.startswith("| ")]) == 1 + len(evals)
    assert "![training curves](plots/curves.png)" in report and "| command | finetune |" in report
    metrics = json.loads((finetuned / "metrics.json").read_text())
    assert f"| eval_accuracy | {metrics['eval_accuracy']:.4g} |" in report


def test_report_of_a_folder_without_metrics(tmp_path):
    one_line_error(invoke("report", tmp_path), "neither metrics.json nor eval_metrics.json")


@pytest.fixture(scope="module")
def always_sports(tiny_bert, tmp_path_factory):
    """An HF folder (no run dir) whose classifier ignores the text and always answers 'sports'."""
    import torch
    from transformers import AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("sports")
    names = sorted(CLASSES)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_bert), num_labels=3, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
    model.save_pretrained(str(root))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_bert / name, root / name)
    return root


@pytest.mark.parametrize("labels", ["names", "ids"])
def test_confusion_matrix_of_a_constant_classifier(always_sports, tmp_path, monkeypatch, labels):
    rows = classification_rows(30, seed=7)
    names = sorted(CLASSES)
    if labels == "ids":  # integer labels are class ids when the model's classes have names
        rows = [{**r, "label": names.index(r["label"])} for r in rows]
    write_csv(tmp_path / "test.csv", rows)
    monkeypatch.chdir(tmp_path)
    result = invoke("eval", "--model", always_sports, "--dataset", "test.csv", "--max-samples", "20")
    assert result.exit_code == 0, result.output
    assert "from the model's architecture BertForSequenceClassification" in result.output
    out = tmp_path / "runs" / f"eval-{always_sports.name}"
    metrics = json.loads((out / "eval_metrics.json").read_text())
    gold = [r["label"] if labels == "names" else names[r["label"]] for r in rows[:20]]
    counts = [gold.count(n) for n in names]  # every row lands in the 'sports' column
    assert metrics["confusion_matrix"] == [[0, counts[0], 0], [0, counts[1], 0], [0, counts[2], 0]]
    assert metrics["eval_accuracy"] == pytest.approx(counts[1] / 20)
    # sports: precision = share of sports rows, recall 1; the other classes score 0.
    assert metrics["per_class"][1]["f1"] == pytest.approx(2 * counts[1] / (counts[1] + 20))
    assert metrics["eval_f1_macro"] == pytest.approx(metrics["per_class"][1]["f1"] / 3)
    assert len(read_jsonl(out / "predictions.jsonl")) == 20


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A random 2-layer GPT-2 with a byte-level BPE tokenizer trained on LM_LINES."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("gpt2")
    tok = train_tokenizer(LM_LINES * 5, TokenizerConfig(type="bpe", vocab_size=300, min_frequency=1), family="causal")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_layer=2, n_embd=32, n_head=2, n_positions=128,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(str(root))
    tok.save_pretrained(str(root))
    return root


def _direct_nll(model_dir, texts):
    """Summed NLL (nats) of [eos] + doc + [eos] + ... computed straight with the model, and its length."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    ids = [tok.eos_token_id]
    for text in texts:
        ids += tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        loss = model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()  # mean over len(ids) - 1 tokens
    return loss * (len(ids) - 1), len(ids) - 1


def test_causal_lm_bits_per_char_by_hand(tiny_gpt2, tmp_path):
    texts = LM_LINES[:6]
    (tmp_path / "val.txt").write_text("\n".join(texts) + "\n")
    result = invoke("eval", "--model", tiny_gpt2, "--dataset", tmp_path / "val.txt", "--task", "lm", "-o",
                    tmp_path / "whole", "--set", "train.max_length=128")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "whole" / "eval_metrics.json").read_text())
    total, tokens = _direct_nll(tiny_gpt2, texts)
    chars = sum(len(t) + 1 for t in texts)  # + the newline each separator stands for
    assert metrics["eval_tokens"] == tokens and metrics["eval_chars"] == chars
    assert metrics["eval_loss"] == pytest.approx(total / tokens, rel=1e-5)
    assert metrics["eval_bits_per_char"] == pytest.approx((total / tokens) * tokens / chars / math.log(2), rel=1e-5)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(total / tokens), rel=1e-5)
    # A window of 16 tokens moving by 8 scores every token once, each with less context.
    result = invoke("eval", "--model", tiny_gpt2, "--dataset", tmp_path / "val.txt", "--task", "lm", "-o",
                    tmp_path / "sliding", "--set", "train.max_length=16", "--set", "eval.stride=8")
    assert result.exit_code == 0, result.output
    sliding = json.loads((tmp_path / "sliding" / "eval_metrics.json").read_text())
    assert sliding["eval_tokens"] == tokens and sliding["eval_loss"] != pytest.approx(metrics["eval_loss"], rel=1e-6)
    assert "sliding window of 16 tokens moving by 8" in (tmp_path / "sliding" / "report.md").read_text()


def test_masked_lm_uses_a_fixed_mask(tiny_bert, tmp_path):
    (tmp_path / "val.txt").write_text("\n".join(r["text"] for r in classification_rows(80, seed=3)) + "\n")
    losses = []
    for batch in ("2", "8"):
        out = tmp_path / f"b{batch}"
        result = invoke("eval", "--model", tiny_bert, "--dataset", tmp_path / "val.txt", "--batch-size", batch, "-o",
                        out, *SHORT)
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / "eval_metrics.json").read_text())
        losses.append(metrics["eval_loss"])
        assert metrics["eval_tokens"] > 0 and metrics["eval_perplexity"] == pytest.approx(math.exp(losses[-1]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)  # the same mask whatever the batch size
    assert "fixed 15 % mask" in (tmp_path / "b8" / "report.md").read_text()


def test_generation_response_perplexity_and_generated_scores(tiny_gpt2, tmp_path):
    from transformers import AutoTokenizer

    rows = [{"prompt": f"the {a} cat walks to the", "completion": f" {p} ."} for a in ("red", "old")
            for p in ("hill", "lake")]
    write_jsonl(tmp_path / "dev.jsonl", rows)
    result = invoke("eval", "--model", tiny_gpt2, "--dataset", tmp_path / "dev.jsonl", "--task", "generation",
                    "--generate", "--set", "generate.max_new_tokens=3", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "eval_metrics.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(tiny_gpt2))
    # Each completion's tokens plus the eos that closes it; the prompt is not scored.
    assert metrics["eval_response_tokens"] == sum(len(tok(r["completion"])["input_ids"]) + 1 for r in rows)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    records = read_jsonl(tmp_path / "out" / "predictions.jsonl")
    assert [r["reference"] for r in records] == [r["completion"].strip() for r in rows]
    assert all(isinstance(r["prediction"], str) and r["loss"] > 0 for r in records)
    assert metrics["eval_exact_match"] == sum(r["correct"] for r in records) / 4
    for key in ("eval_rougeL", "eval_rouge1", "eval_bleu"):
        assert 0 <= metrics[key] <= 1


def test_qa_exact_match_matches_the_predictions(qa_model, tmp_path):
    from llmtune.data.builtin import builtin_dir

    rows = read_jsonl(builtin_dir("qa") / "validation.jsonl")[:10]
    rows += [{**rows[0], "id": "no-answer", "answers": {"text": [], "answer_start": []}}]
    write_jsonl(tmp_path / "dev.jsonl", rows)
    result = invoke("eval", "--model", qa_model, "--dataset", tmp_path / "dev.jsonl", "-o", tmp_path / "out",
                    "--set", "train.max_length=64", "--set", "data.allow_no_answer=true")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "eval_metrics.json").read_text())
    records = read_jsonl(tmp_path / "out" / "predictions.jsonl")
    assert len(records) == 11 and records[-1]["reference"] == []
    assert metrics["eval_exact_match"] == pytest.approx(100 * sum(r["correct"] for r in records) / 11)
    assert metrics["eval_NoAns_total"] == 1 and metrics["eval_HasAns_total"] == 10
    assert metrics["eval_features"] > 11  # long contexts became several windows of 64 tokens


@pytest.fixture(scope="module")
def bad(tiny_bert, always_sports, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    good = classification_rows(12, seed=5)
    write_csv(root / "val.csv", good)
    (root / "stars.csv").write_text("text,stars\n" + "".join(f"{r['text']},{i % 2}\n" for i, r in enumerate(good)))
    write_csv(root / "unseen.csv", [{**r, "label": "politics"} for r in good[:3]] + good[3:])
    for name, keep in (("no-weights", ("config.json", "tokenizer.json", "tokenizer_config.json")),
                       ("no-tokenizer", ("config.json", "model.safetensors")),
                       ("no-arch", ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"))):
        (root / name).mkdir()
        for file in keep:
            shutil.copy(always_sports / file, root / name / file)
    config = json.loads((root / "no-arch" / "config.json").read_text())
    del config["architectures"]
    (root / "no-arch" / "config.json").write_text(json.dumps(config))
    return root, always_sports


BAD = [
    ("model without weights", "no-weights", "val.csv", [], ["no weights", "model.safetensors"]),
    ("model without tokenizer", "no-tokenizer", "val.csv", [], ["no tokenizer", "--set model.tokenizer="]),
    ("task the head cannot do", "sports", "val.csv", ["--task", "qa"], ["BertForSequenceClassification", "no qa head",
                                                                       "--task classification"]),
    ("task cannot be inferred", "no-arch", "val.csv", [], ["cannot infer the task", "--task"]),
    ("no label column", "sports", "stars.csv", [], ["column 'label' not found", "--label-column stars"]),
    ("labels the model does not know", "sports", "unseen.csv", [], ["'politics' (3 rows)", "cooking"]),
    ("max samples 0", "sports", "val.csv", ["--max-samples", "0"], ["data.max_samples", "greater than 0"]),
]


@pytest.mark.parametrize(("name", "model", "dataset", "extra", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_one_line_exit_2(bad, tmp_path, name, model, dataset, extra, words):
    root, sports = bad
    out = tmp_path / "out"
    result = invoke("eval", "--model", sports if model == "sports" else root / model, "--dataset", root / dataset,
                    "-o", out, *extra)
    one_line_error(result, *words)
    assert not out.exists(), "a failed evaluation leaves no folder behind"


def test_qa_eval_reproduces_the_runs_own_evaluation(tiny_bert, tmp_path):
    """Training's final evaluation and `llmtune eval` window contexts with the same stride, so they agree exactly.

    With 64-token windows the stride rule gives 21 tokens (64 // 3); `llmtune eval` once used 16 (64 // 4), which
    cut the contexts into other windows and moved predicted spans.
    """
    from llmtune.data.builtin import builtin_dir

    rows = read_jsonl(builtin_dir("qa") / "validation.jsonl")[:16]
    write_jsonl(tmp_path / "dev.jsonl", rows)
    run = tmp_path / "qa"
    trained = invoke("finetune", "--task", "qa", "--model", tiny_bert, "--dataset", "builtin:qa", "--max-samples", "48",
                     "--eval-dataset", tmp_path / "dev.jsonl", "--max-steps", "3", "--batch-size", "8",
                     "--set", "train.max_length=64", "-o", run)
    assert trained.exit_code == 0, trained.output
    assert "(stride 21)" in trained.output
    result = invoke("eval", "--model", run, "--dataset", tmp_path / "dev.jsonl", "--batch-size", "5")
    assert result.exit_code == 0, result.output
    assert "(stride 21)" in result.output
    metrics = json.loads((run / "metrics.json").read_text())
    evaluated = json.loads((run / "eval" / "eval_metrics.json").read_text())
    assert evaluated["eval_exact_match"] == metrics["eval_exact_match"]
    assert evaluated["eval_f1"] == metrics["eval_f1"]
    answers = json.loads((run / "predictions.json").read_text())
    assert len(answers) == 16
    assert {r["id"]: r["prediction"] for r in read_jsonl(run / "eval" / "predictions.jsonl")} == answers
