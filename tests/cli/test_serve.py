"""`llmtune serve` as a user runs it: flags, config, start-up errors, and SIGTERM finishing a stream in flight."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A 2-layer random GPT-2 with a 1024-token context and a character tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config

    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    tok = train_tokenizer(["the quick brown fox jumps over the lazy dog."],
                          TokenizerConfig(type="char", vocab_size=60, min_frequency=1))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=1024,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    path = tmp_path_factory.mktemp("serve-cli") / "gpt2"
    AutoModelForCausalLM.from_config(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_help_ends_with_examples(cli):
    result = cli("serve", "--help")
    assert result.exit_code == 0
    assert "--api-key-env" in result.stdout and "--max-batch-size" in result.stdout
    assert "llmtune serve --model runs/sft --port 8000" in result.stdout


def test_flags_and_set_reach_the_serve_config(cli):
    result = cli("serve", "-m", "runs/x", "--port", "9001", "--max-batch-size", "4", "--max-queue", "7",
                 "--api-key-env", "MY_KEY", "--set", "serve.default_max_tokens=32", "--print-config")
    assert result.exit_code == 0, result.output
    serve = __import__("yaml").safe_load(result.stdout)["serve"]
    assert serve["host"] == "127.0.0.1"  # local only unless --host says otherwise
    assert (serve["port"], serve["max_batch_size"], serve["max_queue"]) == (9001, 4, 7)
    assert serve["api_key_env"] == "MY_KEY" and serve["default_max_tokens"] == 32


def test_recipe_loads(cli):
    result = cli("serve", "--recipe", "serve/default", "-m", "runs/x", "--print-config")
    assert result.exit_code == 0, result.output
    assert "max_queue: 64" in result.stdout


@pytest.mark.parametrize("args,expected", [
    (["--max-batch-size", "0"], "serve.max_batch_size"),
    (["--port", "70000"], "serve.port"),
    (["--set", "serve.max_qeue=3"], "did you mean serve.max_queue"),
])
def test_bad_settings_fail_in_one_line(cli, args, expected):
    result = cli("serve", "-m", "runs/x", *args)
    assert result.exit_code == 2 and expected in result.output and len(result.output.strip().splitlines()) == 1


def test_unset_api_key_variable_fails_before_loading(cli, monkeypatch):
    monkeypatch.delenv("LLMTUNE_TEST_NO_KEY", raising=False)
    result = cli("serve", "-m", "/nonexistent/model", "--api-key-env", "LLMTUNE_TEST_NO_KEY")
    assert result.exit_code == 2 and "LLMTUNE_TEST_NO_KEY is not set" in result.output


@pytest.mark.parametrize("args,expected", [
    ([], "no model given; pass --model"),
    (["-m", "{tmp}/missing-model"], "missing-model"),
    (["-m", "{tmp}"], "has no config.json"),
])
def test_bad_models_fail_in_one_line(cli, tmp_path, args, expected):
    result = cli("serve", "--port", "0", *[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2 and expected in result.output and len(result.output.strip().splitlines()) == 1


def test_port_in_use_fails_in_one_line(cli, gpt2):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("serve", "-m", str(gpt2), "--port", str(port))
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.output


# Each starts a real `llmtune serve` process (~10 s of imports and loading): Ctrl-C runs in make test-all.
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "Ctrl-C"])
def test_signal_finishes_the_stream_in_flight_then_exits_0(gpt2, sig):
    port = _free_port()
    env = {**os.environ, "LLMTUNE_KEY": "k1"}
    proc = subprocess.Popen([sys.executable, "-m", "llmtune", "serve", "-m", str(gpt2), "--port", str(port),
                             "--api-key-env", "LLMTUNE_KEY"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer k1"}
    try:
        _wait_healthy(url, proc)
        body = {"prompt": "the fox", "max_tokens": 600, "temperature": 0, "stream": True}
        events, started = [], threading.Event()

        def stream():
            with httpx.stream("POST", f"{url}/v1/completions", json=body, headers=headers, timeout=60) as resp:
                for line in resp.iter_lines():
                    if line:  # blank lines separate events
                        events.append(line)
                        started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(30)
        proc.send_signal(sig)  # while the 600-token stream is in flight
        at_signal = len(events)
        reader.join(60)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    data = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
    assert events[-1] == "data: [DONE]", output  # the stream was finished, not cut
    assert data[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert sum(len(d["choices"][0]["text"]) for d in data) > 100 and len(events) > at_signal + 10
    assert proc.returncode == 0 and "server stopped" in output
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")


def _wait_healthy(url, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llmtune serve exited early: {proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail("llmtune serve did not come up")
