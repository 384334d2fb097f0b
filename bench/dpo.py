"""DPO step time: ``llmtune finetune -t dpo`` vs a plain TRL script with the same model, data and settings.

llmtune trains with TRL's own ``DPOTrainer`` (``llmtune/tasks/dpo_trainer.py``) and adds its data
checks, callbacks (metrics.jsonl, progress, graceful stop) and checkpoint marking around it; this
measures what that costs per optimizer step. Both sides:

* the same tiny Llama (4 layers x 128, built here with a BPE tokenizer trained on the pairs; --quick: 2 x 32),
* ``builtin:preferences`` training pairs (prompt, chosen, rejected strings), max length 128,
* batch 8, lr 1e-3, sigmoid loss, beta 0.1, fp32, one checkpoint at the end, no evaluation while training,

each in its own process, alternating, ``REPEATS`` times. The figure is ``train_runtime / steps`` as
the Trainer reports it (data loading and tokenization excluded on both sides). Target: llmtune's
steps/s >= 0.95 x the plain script's (the median of the paired ratios).

Run alone, on a quiet machine: ``.venv/bin/python bench/dpo.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import BENCH_DIR, CpuWatch, Row, Target, contention_note, median, report, run_llmtune, say, work_dir

NAME = "dpo"
REPEATS, STEPS, BATCH, LR, MAX_LENGTH = 3, 30, 8, 1e-3, 128
QUICK_STEPS = 3


def build_model(folder: Path, quick: bool) -> Path:
    """A random tiny Llama and a BPE tokenizer trained on the preference pairs, saved in ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmtune.config.schema import TokenizerConfig
    from llmtune.data.builtin import builtin_dir
    from llmtune.tokenizer import train_tokenizer

    if (folder / "config.json").is_file():
        return folder
    rows = [json.loads(line) for line in (builtin_dir("preferences") / "train.jsonl").read_text().splitlines()]
    texts = [r[k] for r in rows for k in ("prompt", "chosen", "rejected")]
    tok = train_tokenizer(texts, TokenizerConfig(type="bpe", vocab_size=1024, model_max_length=MAX_LENGTH))
    hidden, layers = (32, 2) if quick else (128, 4)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=MAX_LENGTH, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def llmtune_step(model: Path, out: Path, steps: int) -> float:
    """Seconds per optimizer step of ``llmtune finetune -t dpo``."""
    metrics = run_llmtune(["finetune", "-t", "dpo", "-m", str(model), "-d", "builtin:preferences", "-o", str(out),
                           "--overwrite", "--max-steps", str(steps), "--batch-size", str(BATCH), "--lr", str(LR),
                           "--set", f"train.max_length={MAX_LENGTH}", "--set", "train.logging_steps=10",
                           "--set", "train.eval_steps=100000"], out)
    return metrics["train_runtime"] / steps


def trl_step(model: Path, out: Path, steps: int) -> float:
    """Seconds per optimizer step of the plain TRL script (``_trl_dpo.py``)."""
    from llmtune.data.builtin import builtin_dir

    data = builtin_dir("preferences") / "train.jsonl"
    argv = [sys.executable, str(BENCH_DIR / "_trl_dpo.py"), str(model), str(data), str(out), str(steps), str(BATCH),
            str(LR), str(MAX_LENGTH)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=BENCH_DIR)
    if proc.returncode != 0:
        raise RuntimeError(f"the TRL script exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["train_runtime"] / result["steps"]


def run(quick: bool) -> list[Row]:
    """Alternate llmtune and the TRL script; the ``run_all`` entry point."""
    work = work_dir(NAME + ("-quick" if quick else ""))
    model = build_model(work / "model", quick)
    steps, repeats = (QUICK_STEPS, 1) if quick else (STEPS, REPEATS)
    ours, theirs = [], []
    with CpuWatch() as watch:
        for i in range(repeats):
            say(f"repeat {i + 1}/{repeats}: llmtune, then plain TRL ({steps} steps each)")
            ours.append(llmtune_step(model, work / "llmtune", steps))
            theirs.append(trl_step(model, work / "trl", steps))
    paired = median(t / o for o, t in zip(ours, theirs))  # steps/s ratio = baseline s/step / llmtune s/step
    load = contention_note([watch.share])
    note = (f"tiny Llama, builtin:preferences, batch {BATCH}, max_length {MAX_LENGTH}, {steps} steps x {repeats}; "
            "baseline = plain trl.DPOTrainer script, same settings" + (f"; {load}" if load else ""))
    return [Row(NAME, "DPO optimizer steps/s", 1 / median(ours), 1 / median(theirs), "steps/s",
                Target(">=", 0.95, of="ratio"), note, paired_ratio=paired)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model and 3 steps (a smoke test, not a measurement)")
    report(run(parser.parse_args().quick), quick=parser.parse_args().quick)


if __name__ == "__main__":
    main()
