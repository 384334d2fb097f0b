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

Both servers stay up side by side; for each client count the batched round runs right before the
unbatched one, so machine drift hits both alike (each row notes the CPU other processes used meanwhile).
Torch runs on one intra-op thread (see bench/generate.py: two threads collapse on a shared 2-core box).
Part of ``make bench`` (``run(quick)``, full size); alone:

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
from dataclasses import dataclass
from typing import Any

from common import CpuWatch, Row, Target, contention_note, report, say, wait_for_quiet, work_dir
from generate import build_model, prompts

NAME = "serve"
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


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    levels: tuple[int, ...]  # concurrent client counts
    per_client: int  # streamed requests per client
    max_tokens: int


FULL = Plan(levels=(1, 4, 16), per_client=4, max_tokens=64)
QUICK = Plan(levels=(1, 4), per_client=2, max_tokens=16)


def measure(model: Any, tok: Any, plan: Plan) -> dict[int, dict[int, dict[str, Any]]]:
    """Each client count against the batched server, then the unbatched one (adjacent in time).

    Returns:
        ``{max_batch_size: {clients: round}}``, each round with the foreign CPU share under ``"share"``.
    """
    from contextlib import ExitStack

    from llmtune.config.schema import ServeConfig
    from llmtune.serve.app import create_app
    from llmtune.serve.server import BackgroundServer

    texts, out = prompts(), {BATCHED: {}, 1: {}}
    with ExitStack() as stack:
        urls = {}
        for batch in out:
            settings = ServeConfig(port=0, max_batch_size=batch, max_queue=1024)
            urls[batch] = stack.enter_context(BackgroundServer(create_app(model, tok, settings, "bench"), settings))
            round_of(urls[batch], 1, texts[:1], 1, 4)  # warm-up
        wait_for_quiet(max_wait_s=30)
        for clients in plan.levels:
            for batch, url in urls.items():
                say(f"batch {batch}: {clients} client(s)")
                with CpuWatch() as watch:
                    out[batch][clients] = round_of(url, clients, texts, plan.per_client, plan.max_tokens)
                out[batch][clients]["share"] = watch.share
    return out


def same_outputs(a: dict[str, Any], b: dict[str, Any]) -> tuple[int, int]:
    """(prompts whose greedy completion is identical on both servers, prompts compared)."""
    common = [p for p in a["texts"] if p in b["texts"]]
    return sum(a["texts"][p] == b["texts"][p] for p in common), len(common)


def rows(rounds: dict[int, dict[int, dict[str, Any]]], plan: Plan) -> list[Row]:
    """Per client count: aggregate tokens/s and TTFT, batched vs unbatched; then the identical-outputs check."""
    out, same, compared = [], 0, 0
    for clients in plan.levels:
        b, s = rounds[BATCHED][clients], rounds[1][clients]
        load = contention_note([b["share"], s["share"]])
        target = Target(">=", 4.0, "ratio") if clients >= 16 else None
        out.append(Row(NAME, f"aggregate streamed tokens/s, {clients} client(s) (llama 5.2M, greedy, "
                             f"{plan.max_tokens} new tokens)", b["tokens_per_s"], s["tokens_per_s"], "tok/s", target,
                       f"--max-batch-size {BATCHED} vs 1, same model and prompts, {plan.per_client} streamed "
                       f"requests per client over loopback HTTP" + (f"; {load}" if load else "")))
        out.append(Row(NAME, f"time to first token p50, {clients} client(s)", 1000 * b["ttft_p50"],
                       1000 * s["ttft_p50"], "ms", None,
                       f"p95 {1000 * b['ttft_p95']:.0f} ms (batch {BATCHED}) vs {1000 * s['ttft_p95']:.0f} ms (batch 1)"))
        equal, n = same_outputs(b, s)
        same, compared = same + equal, compared + n
    out.append(Row(NAME, f"greedy completions identical, batch {BATCHED} vs batch 1",
                   100.0 * same / max(compared, 1), unit="%", target=Target(">=", 100.0),
                   note=f"{same} of {compared} (prompt, client count) pairs; batching must not change outputs"))
    return out


def run(quick: bool) -> list[Row]:
    """Serve, measure and return the rows (the ``run_all`` entry point)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plan = QUICK if quick else FULL
        model, tok = load(build_model(work_dir("generate") / "llama-5m"))
        return rows(measure(model, tok, plan), plan)
    finally:
        torch.set_num_threads(threads)  # run_all runs other benchmarks in this process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 and 4 clients, 2 requests each, 16 tokens")
    args = parser.parse_args()
    report(run(args.quick), quick=args.quick)


if __name__ == "__main__":
    main()
