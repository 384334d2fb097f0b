"""`llmtune serve` throughput: the batching server vs the same server with ``max_batch_size 1``.

The model is the one ``bench/generate.py`` builds (random Llama at the tiny preset shape, 5.2M
parameters, BPE vocab 8000, context 256), loaded once through ``load_for_generation`` and served by two
apps in this process: batched (``--max-batch-size 16``) and unbatched (``--max-batch-size 1``). For 1, 4
and 16 concurrent clients, each client streams greedy completions (``stream: true`` over loopback
HTTP, parsed like any SSE client would) of the builtin prompts; reported per server and client count:

* aggregate generated tokens/s (usage.completion_tokens of every request / wall time of the round),
* time to first token p50 / p95 (request sent -> first chunk with text),
* the batched/unbatched tokens/s ratio (goal: >= 4x at 16 clients),

and every completion is checked identical between the two servers (greedy decoding).

Torch runs on one intra-op thread (see bench/generate.py: two threads collapse on a shared 2-core box).
Not part of ``make test`` or ``make bench``; run it alone on a quiet machine:

    .venv/bin/python bench/serve.py            # 1/4/16 clients, 4 requests each, 64 new tokens
    .venv/bin/python bench/serve.py --quick    # smoke test: 1/4 clients, 2 requests each, 16 tokens
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common import say, work_dir
from generate import build_model, prompts

BATCHED = 16


def load(folder: Any) -> tuple[Any, Any]:
    """The model and tokenizer as ``llmtune serve`` loads them (fp32 on CPU)."""
    from llmtune.config.loader import load_config
    from llmtune.decoding import load_for_generation

    cfg = load_config("serve", None, {"model.name_or_path": str(folder)}, ["train.precision=fp32"])
    return load_for_generation(cfg)


def stream_one(http: Any, prompt: str, max_tokens: int) -> dict[str, Any]:
    """One streamed greedy completion: its text, token count and time to first text."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    sent, first, text, tokens = time.perf_counter(), None, [], 0
    with http.stream("POST", "/v1/completions", json=body) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                if choice["text"] and first is None:
                    first = time.perf_counter() - sent
                text.append(choice["text"])
    return {"prompt": prompt, "text": "".join(text), "tokens": tokens, "ttft": first or 0.0}


def round_of(url: str, clients: int, texts: list[str], per_client: int, max_tokens: int) -> dict[str, Any]:
    """``clients`` threads each streaming ``per_client`` completions; aggregate tokens/s and TTFT percentiles."""
    import httpx

    jobs = [texts[i % len(texts)] for i in range(clients * per_client)]
    lock, results = threading.Lock(), []

    def client(_: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            while True:
                with lock:
                    if not jobs:
                        return
                    prompt = jobs.pop()
                result = stream_one(http, prompt, max_tokens)
                with lock:
                    results.append(result)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    ttfts = sorted(r["ttft"] for r in results)
    return {"tokens_per_s": sum(r["tokens"] for r in results) / wall, "ttft_p50": statistics.median(ttfts),
            "ttft_p95": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))],
            "texts": {r["prompt"]: r["text"] for r in results}}


def serve_rounds(model: Any, tok: Any, batch: int, levels: list[int], texts: list[str], per_client: int,
                 max_tokens: int) -> dict[int, dict[str, Any]]:
    """Every client count against one server with ``max_batch_size=batch``."""
    from llmtune.config.schema import ServeConfig
    from llmtune.serve.app import create_app
    from llmtune.serve.server import BackgroundServer

    settings = ServeConfig(port=0, max_batch_size=batch, max_queue=1024)
    with BackgroundServer(create_app(model, tok, settings, "bench"), settings) as url:
        round_of(url, 1, texts[:1], 1, 4)  # warm-up
        out = {}
        for clients in levels:
            say(f"batch {batch}: {clients} client(s)")
            out[clients] = round_of(url, clients, texts, per_client, max_tokens)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 and 4 clients, 2 requests each, 16 tokens")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--requests-per-client", type=int, default=None)
    args = parser.parse_args()
    levels = [1, 4] if args.quick else [1, 4, 16]
    max_tokens = args.max_tokens or (16 if args.quick else 64)
    per_client = args.requests_per_client or (2 if args.quick else 4)

    import torch

    torch.set_num_threads(1)
    model, tok = load(build_model(work_dir("generate", "llama-tiny")))
    texts = prompts()
    batched = serve_rounds(model, tok, BATCHED, levels, texts, per_client, max_tokens)
    single = serve_rounds(model, tok, 1, levels, texts, per_client, max_tokens)
    print(f"llmtune serve, greedy, {max_tokens} new tokens, {per_client} streamed requests per client")
    print(f"{'clients':>7} | {'batch 16 tok/s':>14} | {'batch 1 tok/s':>13} | {'ratio':>6} | "
          f"{'TTFT p50/p95 (batch 16)':>23} | {'TTFT p50/p95 (batch 1)':>22} | same outputs")
    for clients in levels:
        b, s = batched[clients], single[clients]
        same = all(s["texts"].get(p) == t for p, t in b["texts"].items())
        print(f"{clients:>7} | {b['tokens_per_s']:>14.1f} | {s['tokens_per_s']:>13.1f} | "
              f"{b['tokens_per_s'] / s['tokens_per_s']:>5.2f}x | "
              f"{1000 * b['ttft_p50']:>9.0f} / {1000 * b['ttft_p95']:>6.0f} ms | "
              f"{1000 * s['ttft_p50']:>8.0f} / {1000 * s['ttft_p95']:>6.0f} ms | {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
