"""`llmtune quickstart`: every stage runs on a sliver of the builtin data (2 steps each) and leaves its run dir."""

import json

import pytest

from llmtune.data.builtin import builtin_dir
from llmtune.pipelines.quickstart import STAGES, label_baselines, logged

ROWS = 24  # training and evaluation rows per stage


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory):
    from typer.testing import CliRunner

    from llmtune.cli.app import app

    out = tmp_path_factory.mktemp("qs") / "demo"
    result = CliRunner().invoke(app, ["quickstart", "-o", str(out), "--max-steps", "2", "--max-samples", str(ROWS),
                                      "--lm-budget", "60s", "--mlm-budget", "60s"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_every_stage_leaves_a_finished_run(quickstart_dir):
    out, output = quickstart_dir
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == [
        "tokenizer (BPE)", "pre-train causal LM (Llama)", "SFT on instructions", "DPO on preferences",
        "pre-train masked LM (BERT)",
        "classifier (reviews)", "extractive QA", "generate (SFT model)", "serve (SFT model, HTTP)"]
    assert len(summary["stages"]) == len(STAGES)
    for run in ("tokenizer", "llama-tiny", "llama-tiny/eval", "sft", "sft/eval", "dpo", "dpo/eval-preferences",
                "sft/eval-preferences", "bert-tiny", "classifier",
                "classifier/eval", "qa", "qa/eval"):
        assert (out / run / "run_complete.json").is_file(), run
    # Two steps each: the step cap reached every training stage.
    for run in ("llama-tiny", "sft", "dpo", "bert-tiny", "classifier", "qa"):
        logged = [json.loads(line) for line in (out / run / "logs" / "metrics.jsonl").read_text().splitlines() if line]
        assert max(entry.get("step", 0) for entry in logged) == 2, run
    assert (out / "classifier" / "eval" / "plots" / "confusion_matrix.png").is_file()
    assert "llmtune quickstart: done" in output and "summary.md" in output
    assert (out / "summary.md").read_text().count("\n| ") == len(STAGES) + 1  # header + one row per stage


def test_generations_and_baselines(quickstart_dir):
    out, _ = quickstart_dir
    summary = json.loads((out / "summary.json").read_text())
    lines = (out / "generations.jsonl").read_text().splitlines()
    assert len(lines) == len(summary["generations"]) == 5
    assert all(json.loads(line)["prompt"].startswith("### Instruction:\n") for line in lines)
    # The classifier's baselines are those of the first ROWS validation rows (what eval scored).
    labels = [json.loads(line)["label"]
              for line in (builtin_dir("classification") / "validation.jsonl").read_text().splitlines()[:ROWS]]
    majority = max(labels.count(label) for label in set(labels)) / ROWS
    row = next(s for s in summary["stages"] if s["stage"] == "classifier (reviews)")
    assert row["baseline"] == f"chance 33.3 %, majority {100 * majority:.1f} %"  # 3 classes


def test_serve_stage_answers_one_request_over_http_and_stops(quickstart_dir):
    import re
    import socket

    from llmtune.pipelines.quickstart import held_out_instructions

    out, output = quickstart_dir
    summary = json.loads((out / "summary.json").read_text())
    served, row = summary["served"], summary["stages"][-1]
    assert served["prompt"] == held_out_instructions()[0][0] == summary["generations"][0]["prompt"]
    # Greedy, same prompt and model as the generate stage (which answered 5 prompts in one padded batch).
    assert served["completion"] == summary["generations"][0]["completion"]
    tokens = served["completion_tokens"]
    assert 1 <= tokens <= 48 and (served["finish_reason"] == "stop" or tokens == 48)
    plural = "" if tokens == 1 else "s"
    assert row["metric"] == f"1 request answered ({tokens} token{plural}, same as generate); server stopped"
    port = int(re.fullmatch(r"http://127\.0\.0\.1:(\d+)/v1", row["path"]).group(1))
    assert port > 0 and served["url"] == f"http://127.0.0.1:{port}/v1/completions"
    with socket.socket() as sock:  # stopped: nothing listens on that port any more
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    assert "served: POST http://127.0.0.1:" in output and "## Served" in (out / "summary.md").read_text()


def test_post_json_reaches_loopback_despite_a_proxy_setting(monkeypatch):
    """The demo's request ignores http_proxy: a proxy would not reach (or should not see) 127.0.0.1."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from llmtune.pipelines.quickstart import post_json

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = json.dumps({"path": self.path, "got": body}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # the discard port: a proxy that answers nothing
    monkeypatch.setenv("no_proxy", "")
    with HTTPServer(("127.0.0.1", 0), Echo) as server:
        threading.Thread(target=server.handle_request, daemon=True).start()
        reply = post_json(f"http://127.0.0.1:{server.server_address[1]}/v1/completions", {"prompt": "hi"}, timeout=10)
    assert reply == {"path": "/v1/completions", "got": {"prompt": "hi"}}


def test_serve_stage_is_skipped_with_the_install_hint_without_the_serve_extra(monkeypatch, tmp_path):
    from llmtune.pipelines.quickstart import Quickstart, QuickstartOptions, serve_stage
    from llmtune.runs import serve

    monkeypatch.setattr(serve, "missing_serve_extra", lambda: ["fastapi"])
    row = serve_stage(Quickstart(QuickstartOptions(output_dir=str(tmp_path)), tmp_path))
    assert (row.stage, row.metric, row.path) == ("serve (SFT model, HTTP)",
                                                 "skipped: needs pip install 'llmtune[serve]'", "-")


def test_refuses_a_used_folder_without_overwrite(cli, tmp_path):
    (tmp_path / "old.txt").write_text("x")
    result = cli("quickstart", "-o", str(tmp_path))
    assert result.exit_code == 2 and "--overwrite" in result.output


def test_bad_budget_is_one_line(cli, tmp_path):
    result = cli("quickstart", "-o", str(tmp_path / "q"), "--lm-budget", "soon")
    assert result.exit_code == 2 and "--lm-budget" in result.output and "not a duration" in result.output


def test_label_baselines_from_supports():
    metrics = {"per_class": [{"label": "a", "support": 6}, {"label": "b", "support": 3}, {"label": "c", "support": 1}]}
    assert label_baselines(metrics) == (1 / 3, 0.6)
    assert label_baselines({**metrics, "labels": ["a", "b", "c", "d"]}) == (1 / 4, 0.6)  # a class absent from the rows
    assert all(v != v for v in label_baselines({}))  # NaN when nothing is known


def test_logged(tmp_path):
    assert logged(tmp_path, "eval_loss") == []  # no logs
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.jsonl").write_text('{"loss": 3}\n\n{"eval_loss": 2.5}\n{"eval_loss": 1.0}\n')
    assert logged(tmp_path, "eval_loss") == [2.5, 1.0]
    assert logged(tmp_path, "missing") == []


def test_encoder_corpus_adds_the_review_texts_without_labels(tmp_path):
    import json

    from llmtune.data.builtin import builtin_dir
    from llmtune.pipelines.quickstart import encoder_corpus

    train, validation = encoder_corpus(tmp_path / "corpus")
    lines = train.read_text(encoding="utf-8").splitlines()
    prose = (builtin_dir("text") / "train.txt").read_text(encoding="utf-8").splitlines()
    reviews = [json.loads(r)["text"] for r in (builtin_dir("classification") / "train.jsonl").read_text().splitlines()]
    assert lines == prose + reviews  # the prose, then one review per line; no label anywhere
    held_out = validation.read_text(encoding="utf-8")
    assert json.loads((builtin_dir("classification") / "validation.jsonl").read_text().splitlines()[0])["text"] in held_out


def test_dpo_row_compares_the_sft_and_dpo_models_on_held_out_pairs(quickstart_dir):
    out, _ = quickstart_dir
    summary = json.loads((out / "summary.json").read_text())
    row = next(s for s in summary["stages"] if s["stage"] == "DPO on preferences")
    sft, dpo = (json.loads((out / run / "eval-preferences" / "eval_metrics.json").read_text()) for run in ("sft", "dpo"))
    # eval --task dpo on the first ROWS validation pairs: accuracy is a whole number of pairs out of ROWS.
    for m in (sft, dpo):
        assert m["eval_preference_accuracy"] * ROWS == pytest.approx(round(m["eval_preference_accuracy"] * ROWS))
    assert row["metric"] == f"held-out preference accuracy {100 * dpo['eval_preference_accuracy']:.0f} %"
    assert row["baseline"] == f"{100 * sft['eval_preference_accuracy']:.0f} % (SFT model)"
    assert row["path"] == str(out / "dpo")
