"""LoRA on an int8 base (``--quantize-base int8``): peak memory and final eval loss against the fp32-base LoRA run.

1. A causal Llama big enough that its weights dominate memory (the ``small`` preset's 768-wide blocks, ``FULL.layers``
   of them, BPE vocabulary 8000: ~160M parameters at 22 layers) is pre-trained briefly on real web text
   (``/work/shared/datasets/web-c4-sample``, ``FULL.pretrain_steps`` steps: barely past unigram statistics,
   but a real checkpoint with trained weights); it is reused from ``bench/_work/qlora_memory`` when a finished
   one is there (``--fresh`` trains it again);
2. the SAME ``llmtune finetune -t generation --lora --gradient-checkpointing`` command (builtin:instructions,
   fixed ``--max-steps``, seed 0) runs twice, each in its own process: on the fp32 base, and with
   ``--quantize-base int8`` (torchao int8 weight-only). Gradient checkpointing (as QLoRA runs) keeps activations
   small beside the weights, which are what quantization shrinks.

Memory is the finetune process's peak RSS (``ru_maxrss`` from ``wait4`` on that child: loading, training,
evaluation and saving the merged model all count), less the peak RSS of a process that only imported torch and
transformers (a runtime every run carries and no quantization shrinks; llmtune's own imports and data stay in).
Targets: that int8/fp32 ratio <= 0.6 and the final eval loss within 2 %. Informational rows: the whole peaks,
the peak sampled until the final evaluation (before the merged model is saved) and the steady step time.

    .venv/bin/python bench/qlora_memory.py [--quick] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import CpuWatch, Row, Target, contention_note, llmtune_argv, report, say, wait_for_quiet, work_dir

if TYPE_CHECKING:
    import psutil

NAME = "qlora_memory"
C4 = Path(os.environ.get("LLMTUNE_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets")) \
    / "web-c4-sample" / "train.jsonl"


@dataclass(frozen=True)
class Plan:
    """The base model and the two fine-tuning runs."""

    layers: int  # Llama blocks of 768 (the `small` preset has 12)
    pretrain_steps: int
    finetune_steps: int
    batch_size: int
    max_length: int
    eval_rows: int  # builtin:instructions validation rows scored at the end


FULL = Plan(layers=22, pretrain_steps=8, finetune_steps=10, batch_size=4, max_length=128, eval_rows=32)
QUICK = Plan(layers=1, pretrain_steps=2, finetune_steps=2, batch_size=2, max_length=64, eval_rows=4)
VOCAB = 8000
MEMORY_TARGET, LOSS_TOLERANCE = 0.6, 0.02


@dataclass
class Measured:
    """One finetune process: its peak RSS and what its metrics.json says."""

    peak_rss: int  # bytes, ru_maxrss of the process
    train_peak_rss: int  # bytes, the most RSS sampled until the final evaluation's result line (before saving)
    eval_loss: float
    step_seconds: float
    wall_seconds: float


@dataclass
class Trace:
    """A finished command: its peak RSS, RSS samples and output lines, both timed from its start."""

    peak_rss: int  # bytes, ru_maxrss from wait4 (exact; samples can miss a short peak)
    samples: list[tuple[float, int]]  # (seconds, RSS bytes of the process tree) every SAMPLE_S
    lines: list[tuple[float, str]]

    def peak_until(self, marker: str) -> int:
        """The most RSS sampled until the last output line starting with ``marker`` (all samples without one)."""
        ends = [t for t, line in self.lines if line.startswith(marker)]
        end = ends[-1] if ends else float("inf")
        return max((rss for t, rss in self.samples if t <= end), default=0)


SAMPLE_S = 0.05


def _tree_rss(proc: psutil.Process) -> int:
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            pass
    return total


def traced(argv: Sequence[str], log_path: Path) -> Trace:
    """Run ``argv`` (output to ``log_path``), sampling its process tree's RSS; its peak from ``wait4``.

    Raises:
        RuntimeError: The command failed (the message holds the log's last lines).
    """
    import psutil

    start = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[tuple[float, str]] = []
    with log_path.open("w", encoding="utf-8") as log:
        reader = threading.Thread(target=_read, args=(proc, log, lines, start), daemon=True)
        reader.start()
        samples, handle = [], psutil.Process(proc.pid)
        while True:  # wait4 rather than poll(): it reaps the child with its rusage (ru_maxrss)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                samples.append((time.monotonic() - start, _tree_rss(handle)))
            except psutil.Error:
                pass  # exiting: the next wait4 reaps it
            time.sleep(SAMPLE_S)
        reader.join()
    code = proc.returncode = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = [line for _, line in lines[-3:]]
        raise RuntimeError(f"{Path(argv[0]).name} {argv[1] if len(argv) > 1 else ''} exited {code}: {' | '.join(tail)}")
    return Trace(usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024), samples, lines)  # Linux: KiB


def _read(proc: subprocess.Popen, log: Any, lines: list[tuple[float, str]], start: float) -> None:
    for line in proc.stdout:
        log.write(line)
        lines.append((time.monotonic() - start, line.strip()))


def runtime_rss(work: Path) -> int:
    """Peak RSS of a process that only imports torch and transformers (what every run carries)."""
    return traced([sys.executable, "-c", "import torch, transformers"], work / "runtime.log").peak_rss


def llmtune(args: Sequence[str], log_path: Path) -> Trace:
    """Run one llmtune command (output to ``log_path``), tracing its memory."""
    argv = [*llmtune_argv(), *args]
    say(f"llmtune: {shlex.join(argv)}  (log: {log_path})")
    return traced(argv, log_path)


def pretrained(work: Path, plan: Plan, fresh: bool) -> Path:
    """The base Llama, pre-trained ``plan.pretrain_steps`` steps on C4 text (unless a finished one is there)."""
    out = work / f"base-{plan.layers}x768-{plan.pretrain_steps}steps"
    if fresh or not (out / "run_complete.json").is_file():
        if not C4.is_file():
            raise FileNotFoundError(f"{C4} not found; set LLMTUNE_DATASETS to the shared datasets folder")
        llmtune(["pretrain", "--arch", "llama", "--size", "small", "-d", str(C4), "--max-steps",
                 str(plan.pretrain_steps), "--batch-size", "8", "--lr", "1e-3", "--seed", "0",
                 "--set", f"model.config.num_hidden_layers={plan.layers}", "--set", f"tokenizer.vocab_size={VOCAB}",
                 "--set", f"train.max_length={plan.max_length}", "--set", "data.max_eval_samples=4",
                 "--set", "train.warmup_fraction=0.1", "-o", str(out), "--overwrite"], work / f"{out.name}.log")
    return out


def finetune(base: Path, out: Path, plan: Plan, extra: Sequence[str]) -> Measured:
    """``llmtune finetune -t generation --lora`` of ``base`` on builtin:instructions, its peak RSS and metrics."""
    start = time.monotonic()
    trace = llmtune(["finetune", "-t", "generation", "--model", str(base), "-d", "builtin:instructions", "--lora",
                    "--max-steps", str(plan.finetune_steps), "--batch-size", str(plan.batch_size), "--lr", "1e-3",
                    "--seed", "0", "--gradient-checkpointing", "--set", f"train.max_length={plan.max_length}",
                    "--set", f"data.max_eval_samples={plan.eval_rows}", "--set", "train.eval_steps=100000",
                    *extra, "-o", str(out), "--overwrite"], out.parent / f"{out.name}.log")
    wall = time.monotonic() - start
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    return Measured(trace.peak_rss, trace.peak_until("eval at step"), float(metrics["eval_loss"]),
                    1 / float(metrics["train_steady_steps_per_second"]), wall)


def rows(fp32: Measured, int8: Measured, runtime: int, note: str) -> list[Row]:
    """The table: memory ratios (runtime subtracted: target), eval loss (target), whole peaks and step time."""
    gib = 1024 ** 3

    def net(m: Measured) -> float:
        return (m.peak_rss - runtime) / gib

    return [
        Row(NAME, "peak RSS less torch+transformers runtime, int8 vs fp32 base", net(int8), net(fp32), "GiB",
            Target("<=", MEMORY_TARGET, of="ratio"), note),
        Row(NAME, "final eval loss, int8 vs fp32 base", int8.eval_loss, fp32.eval_loss, "nats",
            Target("<=", 1 + LOSS_TOLERANCE, of="ratio")),
        Row(NAME, "peak RSS of the finetune process", int8.peak_rss / gib, fp32.peak_rss / gib, "GiB"),
        Row(NAME, "peak RSS through the final evaluation (sampled)", int8.train_peak_rss / gib,
            fp32.train_peak_rss / gib, "GiB"),
        Row(NAME, "steady step time", int8.step_seconds, fp32.step_seconds, "s"),
    ]


def run(quick: bool, *, fresh: bool = False) -> list[Row]:
    """Pre-train (or reuse) the base, fine-tune it with LoRA on fp32 and on int8; the ``run_all`` entry point."""
    plan = QUICK if quick else FULL
    work = work_dir(NAME)
    wait_for_quiet()
    with CpuWatch() as watch:
        base = pretrained(work, plan, fresh)
        runtime = runtime_rss(work)
        fp32 = finetune(base, work / "lora-fp32", plan, [])
        int8 = finetune(base, work / "lora-int8", plan, ["--quantize-base", "int8"])
    params = json.loads((base / "config.json").read_text())
    load = contention_note([watch.share])
    note = (f"Llama {params['num_hidden_layers']}x{params['hidden_size']}, vocab {params['vocab_size']}, pre-trained "
            f"{plan.pretrain_steps} steps on C4 text; LoRA finetune on builtin:instructions, {plan.finetune_steps} "
            f"steps x batch {plan.batch_size} x <= {plan.max_length} tokens, seed 0, eval on {plan.eval_rows} "
            f"validation rows; runtime subtracted: {runtime / 1024 ** 3:.2f} GiB (peak RSS of "
            f"`import torch, transformers`); wall fp32 {fp32.wall_seconds:.0f}s, int8 {int8.wall_seconds:.0f}s"
            + (f"; {load}" if load else ""))
    return rows(fp32, int8, runtime, note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny runs (a smoke test, not a measurement)")
    parser.add_argument("--fresh", action="store_true", help="pre-train the base again even if a finished one is there")
    args = parser.parse_args()
    report(run(args.quick, fresh=args.fresh), quick=args.quick)


if __name__ == "__main__":
    main()
