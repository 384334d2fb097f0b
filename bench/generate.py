"""Generation speed: ``llmtune generate``'s code path vs plain ``model.generate`` on the same model.

The model is llmtune's default pre-training architecture at its tiny preset shape (Llama 4x256, vocab
8000: 5.2M parameters) with random weights, saved with a BPE tokenizer trained on the builtin text, and
loaded by both sides from that folder (llmtune through ``load_for_generation``, the baseline with
``AutoModelForCausalLM.from_pretrained``). Decoding is greedy with ``min_new_tokens == max_new_tokens``
so both sides produce exactly the same number of tokens (and the same tokens: checked).

Two rows, each the median of per-pair ratios of runs adjacent in time (these machines drift):

* batch 1: one prompt streamed to a sink by llmtune's single-prompt path (``stream_one``: streamer,
  stop-string-aware writer, timing) vs one plain ``model.generate`` call. Target >= 1.0x tokens/s.
* 32 prompts: llmtune's file path (``generate_records``: length-sorted, left-padded batches of the
  CLI's default 16) vs the plain loop calling ``model.generate`` once per prompt. Target >= 3x.

Both sides run with one intra-op thread (``THREADS``): on these shared 2-core machines, two OpenMP
threads collapse whenever another process takes a core (every parallel region waits for the
descheduled thread; the same batched run measured 40 tok/s with 2 threads under load and 900 tok/s with
1), which made the ratios swing between 1.4x and 7x from run to run.

Run alone: ``.venv/bin/python bench/generate.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import CpuWatch, Row, Target, contention_note, median, report, say, wait_for_quiet, work_dir

NAME = "generate"
VOCAB, CONTEXT = 8000, 256
THREADS = 1  # torch intra-op threads for both sides (see the module docstring)
N_PROMPTS = 32


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    new_tokens: int
    single_pairs: int  # (llmtune, plain) pairs of single-prompt runs
    batch_pairs: int  # (llmtune, plain) pairs over all 32 prompts


FULL = Plan(new_tokens=64, single_pairs=12, batch_pairs=3)
QUICK = Plan(new_tokens=32, single_pairs=8, batch_pairs=2)


def prompts() -> list[str]:
    """32 prompts of 4 to 34 words: openings of the builtin validation paragraphs."""
    from llmtune.data.builtin import builtin_dir

    lines = [line for line in (builtin_dir("text") / "validation.txt").read_text().splitlines() if line.strip()]
    return [" ".join(lines[i % len(lines)].split()[: 4 + (i * 7) % 31]) for i in range(N_PROMPTS)]


def build_model(folder: Path) -> Path:
    """A random 5.2M-parameter Llama (tiny preset shape) and its tokenizer, saved once in ``folder``."""
    if (folder / "model.safetensors").is_file():
        return folder
    import torch

    from llmtune.config.schema import TokenizerConfig
    from llmtune.data.builtin import builtin_dir
    from llmtune.modeling import PRESETS, build_config, build_model as build
    from llmtune.tokenizer import train_tokenizer

    text = (builtin_dir("text") / "train.txt").read_text().splitlines()
    tok = train_tokenizer(text, TokenizerConfig(type="bpe", vocab_size=VOCAB, model_max_length=CONTEXT))
    shape = {k: v for k, v in PRESETS["llama"]["tiny"].items() if k != "max_position_embeddings"}
    torch.manual_seed(0)
    model = build(build_config("llama", "tiny", {**shape, "vocab_size": VOCAB}, tok, CONTEXT))
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def load_both(folder: Path) -> tuple[Any, Any, Any]:
    """(llmtune's model, the plain model, the tokenizer), both fp32 on CPU."""
    import transformers

    from llmtune.config.loader import load_config
    from llmtune.decoding import load_for_generation

    cfg = load_config("generate", None, {"model.name_or_path": str(folder)}, ["train.precision=fp32"])
    model, tok = load_for_generation(cfg)
    plain = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    return model, plain, tok


def llmtune_single(model: Any, tok: Any, prompt: str, g: Any) -> tuple[float, str]:
    """tokens/s of the single-prompt streaming path (written to a sink), and its text."""
    from llmtune.runs.generate import stream_one

    pieces: list[str] = []
    start = time.perf_counter()
    stats = stream_one(model, tok, prompt, g, write=pieces.append)
    return stats.new_tokens / (time.perf_counter() - start), "".join(pieces)[:-1]


def plain_single(model: Any, tok: Any, prompt: str, n: int) -> tuple[float, str]:
    """tokens/s of one plain ``model.generate`` call, and its text."""
    start = time.perf_counter()
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    elapsed = time.perf_counter() - start
    new = out[0, ids["input_ids"].shape[1]:]
    return len(new) / elapsed, tok.decode(new, skip_special_tokens=True)


def llmtune_batch(model: Any, tok: Any, texts: list[str], g: Any, batch_size: int) -> float:
    """Aggregate tokens/s of the prompt-file path."""
    from llmtune.decoding import generate_records

    start = time.perf_counter()
    _, stats = generate_records(model, tok, texts, g, batch_size)
    return stats.new_tokens / (time.perf_counter() - start)


def plain_loop(model: Any, tok: Any, texts: list[str], n: int) -> float:
    """Aggregate tokens/s of calling ``model.generate`` once per prompt."""
    start, tokens = time.perf_counter(), 0
    for text in texts:
        ids = tok(text, return_tensors="pt")
        tokens += model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False).shape[1] - ids["input_ids"].shape[1]
    return tokens / (time.perf_counter() - start)


def _pairs(count: int, llm: Any, plain: Any, label: str) -> tuple[list[float], list[float], list[Any]]:
    """Alternate the two sides ``count`` times; returns their rates and the foreign CPU shares."""
    rates: dict[str, list[float]] = {"llmtune": [], "plain": []}
    shares = []
    for i in range(count):
        for side in (("llmtune", "plain") if i % 2 == 0 else ("plain", "llmtune")):
            with CpuWatch() as watch:
                rates[side].append((llm if side == "llmtune" else plain)(i))
            shares.append(watch.share)
        say(f"{label} {i + 1}/{count}: llmtune {rates['llmtune'][-1]:,.0f} tok/s, plain {rates['plain'][-1]:,.0f} tok/s")
    return rates["llmtune"], rates["plain"], shares


def run(quick: bool) -> list[Row]:
    """Measure and return the rows (the ``run_all`` entry point)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return measure(QUICK if quick else FULL)
    finally:
        torch.set_num_threads(threads)  # run_all runs other benchmarks in this process


def measure(plan: Plan) -> list[Row]:
    """Build/load the model, check both sides agree, then time the pairs."""
    from llmtune.config.schema import GenerateConfig, TrainConfig

    model, plain, tok = load_both(build_model(work_dir("generate") / "llama-5m"))
    texts = prompts()
    g = GenerateConfig(temperature=0, max_new_tokens=plan.new_tokens, min_new_tokens=plan.new_tokens)
    n, batch_size = plan.new_tokens, TrainConfig().batch_size
    (_, ours), (_, theirs) = llmtune_single(model, tok, texts[0], g), plain_single(plain, tok, texts[0], n)  # warm-up
    assert ours == theirs, "llmtune and plain generate disagree on the greedy continuation"
    wait_for_quiet(max_wait_s=30)
    one = _pairs(plan.single_pairs, lambda i: llmtune_single(model, tok, texts[i], g)[0],
                 lambda i: plain_single(plain, tok, texts[i], n)[0], "batch 1")
    many = _pairs(plan.batch_pairs, lambda i: llmtune_batch(model, tok, texts, g, batch_size),
                  lambda i: plain_loop(plain, tok, texts, n), f"{N_PROMPTS} prompts")
    return [_row(f"tokens/s, batch 1 (llama 5.2M, greedy, {n} new tokens)", one, Target(">=", 1.0, "ratio"),
                 f"llmtune = single-prompt streaming path; plain = one model.generate call; same prompts; "
                 f"{THREADS} torch thread"),
            _row(f"aggregate tokens/s, {N_PROMPTS} prompts ({n} new tokens each)", many, Target(">=", 3.0, "ratio"),
                 f"llmtune = prompt-file path, length-sorted left-padded batches of {batch_size}; "
                 "plain = model.generate once per prompt")]


def _row(metric: str, measured: tuple[list[float], list[float], list[Any]], target: Target, what: str) -> Row:
    ours, theirs, shares = measured
    ratios = [a / b for a, b in zip(ours, theirs)]
    load = contention_note(shares)
    return Row(NAME, metric, median(ours), median(theirs), "tok/s", target,
               f"{what}; ratio = median of {len(ratios)} paired ratios ({', '.join(f'{r:.2f}' for r in ratios)})"
               + (f"; {load}" if load else ""), paired_ratio=median(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (a smoke test)")
    args = parser.parse_args()
    report(run(args.quick), quick=args.quick)


if __name__ == "__main__":
    main()
