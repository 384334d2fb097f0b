"""LoRA on an int8 base (``--quantize-base int8``): peak memory and final eval loss against the fp32-base LoRA run.

1. The base is a causal Llama big enough that its weights dominate memory: llmtune's ``base`` preset
   (1024-wide blocks, MLP 2816, tied embeddings), ``FULL.layers`` of them, BPE vocabulary 8000: ~317M parameters
   at 24 layers (1.2 GiB in fp32). Its tokenizer and config come from a one-step ``llmtune pretrain`` of a
   one-block model of that shape on C4 text (``/work/shared/datasets/web-c4-sample``); the full-depth model is
   then built from that config with transformers and saved UNTRAINED (random init, seed 0): a memory benchmark
   needs the weights' sizes, not their values, and pre-training 300M+ parameters would need fp32 Adam state and
   minutes. Both runs start from the same saved folder, reused from ``bench/_work/qlora_memory`` (``--fresh``
   builds it again); the eval-loss row then compares two LoRA runs on a random base (int8 rounding's effect on
   the loss), not a useful model;
2. the SAME ``llmtune finetune -t generation --lora --gradient-checkpointing`` command (builtin:instructions,
   fixed ``--max-steps``, seed 0) runs twice, each in its own process: on the fp32 base, and with
   ``--quantize-base int8`` (torchao int8 weight-only). Gradient checkpointing (as QLoRA runs) keeps activations
   small beside the weights, which are what quantization shrinks.

Memory is sampled from the parent every ``SAMPLE_S`` (20 ms): ``/proc/<pid>/status`` of the finetune process and
its children (RssAnon, VmRSS), and every ``SMAPS_EVERY`` samples (~1 s: smaps is costly) ``/proc/<pid>/smaps``
for the resident file-backed pages of memory-mapped ``*.safetensors`` files (the checkpoint; Rss less Anonymous,
as pages written copy-on-write are in RssAnon already); ``ru_maxrss`` from ``wait4`` is kept too. Each run's
samples are written beside its log (``lora-*-memory.csv``: seconds, RssAnon, VmRSS, checkpoint pages in bytes).

Why file-backed pages are not simply counted: the fp32 run loads zero-copy, its weights ARE views of the
checkpoint's memory map (file-backed, not anonymous) and are read on every step, so anonymous memory alone leaves
its weights out; and transformers' own quantizing load (before ``adapters.quantizing_load``) kept every fp32 page
it had quantized resident in that map until it closed, clean page cache the kernel would drop under pressure.
Hence the headline, the WORKING SET of a run: the peak over samples of RssAnon (what the process allocated) plus,
from the moment the model is ready (the ``LoRA r=...`` line) to the end, the resident checkpoint pages still
mapped. llmtune's int8 load now reads the checkpoint with pread and never maps it, so for it the two counts agree
and the whole-process rows (VmRSS, ``ru_maxrss``: 0.58x at the last measurement) tell the same story. The peak
RssAnon of a process that only imports the runtime (torch, transformers, peft, datasets: carried by every run,
shrunk by no quantization) is subtracted on both sides. Targets: that int8/fp32 ratio <= 0.6 and the final eval
loss within 2 %. Informational rows, nothing hidden: peak RssAnon alone (same subtraction), the whole-process peak
VmRSS, ``ru_maxrss`` and the steady step time.

Time (a loaded 2-core machine, other jobs using ~50 % of it): building the base ~1 min once; then per LoRA step
~16-31 s on fp32 and ~52-74 s on int8 (before the sliced int8 matmul; quiet: 1.9-2.9 s vs 2.3-3.9 s), plus ~2 min of loading, eval,
samples and saving per run: full size (4 steps) ~8-9 min, ``run_all``'s 2 steps ~5.5 min; less on quiet cores.

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
from typing import Any

from common import (
    CpuWatch,
    Row,
    Target,
    contention_note,
    llmtune_argv,
    report,
    say,
    wait_for_quiet,
    work_dir,
)

NAME = "qlora_memory"
C4 = Path(os.environ.get("LLMTUNE_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets")) \
    / "web-c4-sample" / "train.jsonl"


@dataclass(frozen=True)
class Plan:
    """The base model and the two fine-tuning runs."""

    layers: int  # Llama blocks of the `base` preset's 1024-wide shape (the preset has 24)
    finetune_steps: int
    batch_size: int
    max_length: int
    eval_rows: int  # builtin:instructions validation rows scored at the end


FULL = Plan(layers=24, finetune_steps=4, batch_size=2, max_length=128, eval_rows=8)
QUICK = Plan(layers=1, finetune_steps=2, batch_size=2, max_length=64, eval_rows=4)
VOCAB = 8000
MEMORY_TARGET, LOSS_TOLERANCE = 0.6, 0.02
READY_MARKER = "[llmtune] LoRA r="  # printed once the model is loaded, quantized and its checkpoint map released
RUNTIME_IMPORTS = "import torch, transformers, peft, datasets"
SAMPLE_S, SMAPS_EVERY = 0.02, 50  # smaps costs ~30 ms of kernel time on a torch process: ~1 s apart
GIB = 1024 ** 3


@dataclass(frozen=True)
class Sample:
    """One reading of a process tree, in bytes, ``t`` seconds after its start."""

    t: float
    anon: int  # RssAnon summed over the tree
    vmrss: int  # VmRSS summed over the tree
    checkpoint: int  # resident pages of mapped *.safetensors files (last smaps reading)


@dataclass
class Trace:
    """A finished command: its ``wait4`` peak RSS, memory samples and output lines, both timed from its start."""

    max_rss: int  # bytes, ru_maxrss from wait4 (exact; includes file-backed pages)
    samples: list[Sample]
    lines: list[tuple[float, str]]

    def first(self, marker: str) -> float:
        """Seconds from the start to the first output line starting with ``marker`` (inf without one)."""
        return min((t for t, line in self.lines if line.startswith(marker)), default=float("inf"))

    def peak_anon(self) -> int:
        return max((s.anon for s in self.samples), default=0)

    def peak_vmrss(self) -> int:
        return max((s.vmrss for s in self.samples), default=0)

    def peak_working_set(self, ready: float) -> int:
        """Peak RssAnon plus, from ``ready`` on, the resident pages of the still-mapped checkpoint."""
        return max((s.anon + (s.checkpoint if s.t >= ready else 0) for s in self.samples), default=0)


@dataclass
class Measured:
    """One finetune process: its memory (bytes) and what its metrics.json says."""

    working_set: int
    anon: int
    vmrss: int
    max_rss: int
    eval_loss: float
    step_seconds: float
    wall_seconds: float


def _status_kib(pid: int) -> tuple[int, int]:
    """(RssAnon, VmRSS) of ``pid`` in KiB from /proc/<pid>/status (0, 0 for a kernel thread or zombie)."""
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "VmRSS"):
                fields[key] = int(value.split()[0])
    return fields.get("RssAnon", 0), fields.get("VmRSS", 0)


def _checkpoint_kib(pid: int) -> int:
    """Resident KiB of ``pid``'s mappings of ``*.safetensors`` files, from /proc/<pid>/smaps."""
    text = Path(f"/proc/{pid}/smaps").read_text(encoding="utf-8", errors="replace")
    total, at = 0, text.find(".safetensors\n")  # a mapping's header line ends with its file's path
    while at >= 0:  # Rss less Anonymous: pages written copy-on-write (a merge in place) are in RssAnon already
        total += _smaps_field(text, "Rss", at) - _smaps_field(text, "Anonymous", at)
        at = text.find(".safetensors\n", at + 1)
    return total


def _smaps_field(text: str, name: str, header: int) -> int:
    """The KiB of field ``name`` in the smaps block whose header line is at ``header``."""
    start = text.index(f"\n{name}:", header) + len(name) + 2
    return int(text[start:text.index("kB", start)])


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc/<pid>/task/*/children."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*/children"):
            try:
                pids.extend(int(c) for c in task.read_text().split())
            except OSError:
                pass
        i += 1
    return pids


class Sampler:
    """Reads a process tree's memory from /proc: status every call, smaps every ``SMAPS_EVERY`` calls."""

    def __init__(self, pid: int, start: float) -> None:
        self.pid, self.start, self.calls = pid, start, 0
        self.pids, self.checkpoint = [pid], 0

    def __call__(self) -> Sample:
        if self.calls % SMAPS_EVERY == 0:
            self.pids = _tree(self.pid)
            self.checkpoint = self._sum(_checkpoint_kib)
        self.calls += 1
        anon = vmrss = 0
        for pid in self.pids:
            try:
                a, v = _status_kib(pid)
            except OSError:  # exited since the tree was listed
                continue
            anon, vmrss = anon + a, vmrss + v
        return Sample(time.monotonic() - self.start, anon * 1024, vmrss * 1024, self.checkpoint * 1024)

    def _sum(self, read: Any) -> int:
        total = 0
        for pid in self.pids:
            try:
                total += read(pid)
            except OSError:
                pass
        return total


def traced(argv: Sequence[str], log_path: Path) -> Trace:
    """Run ``argv`` (output to ``log_path``), sampling its process tree's memory; its ru_maxrss from ``wait4``.

    Raises:
        RuntimeError: The command failed (the message holds the log's last lines).
    """
    start = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # lines timed as printed
    lines: list[tuple[float, str]] = []
    with log_path.open("w", encoding="utf-8", buffering=1) as log:  # line-buffered: a killed run keeps its log
        reader = threading.Thread(target=_read, args=(proc, log, lines, start), daemon=True)
        reader.start()
        samples, sample = [], Sampler(proc.pid, start)
        while True:  # wait4 rather than poll(): it reaps the child with its rusage (ru_maxrss)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                samples.append(sample())
            except OSError:
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


def runtime_anon(work: Path) -> int:
    """Peak RssAnon of a process that only imports the runtime every run carries."""
    return traced([sys.executable, "-c", RUNTIME_IMPORTS], work / "runtime.log").peak_anon()


def llmtune(args: Sequence[str], log_path: Path) -> Trace:
    """Run one llmtune command (output to ``log_path``), tracing its memory."""
    argv = [*llmtune_argv(), *args]
    say(f"llmtune: {shlex.join(argv)}  (log: {log_path})")
    return traced(argv, log_path)


def template(work: Path, plan: Plan) -> Path:
    """Tokenizer and config: a one-block `base`-shaped Llama pre-trained one step on C4 (reused when there)."""
    out = work / f"template-base-1layer-{plan.max_length}"
    if not (out / "run_complete.json").is_file():
        if not C4.is_file():
            raise FileNotFoundError(f"{C4} not found; set LLMTUNE_DATASETS to the shared datasets folder")
        llmtune(["pretrain", "--arch", "llama", "--size", "base", "-d", str(C4), "--max-steps", "1",
                 "--batch-size", "2", "--seed", "0", "--set", "model.config.num_hidden_layers=1",
                 "--set", f"tokenizer.vocab_size={VOCAB}", "--set", f"train.max_length={plan.max_length}",
                 "--set", "data.max_eval_samples=2", "-o", str(out), "--overwrite"], work / f"{out.name}.log")
    return out


def base_model(work: Path, plan: Plan, fresh: bool) -> Path:
    """The untrained (seed 0) ``plan.layers``-block base, saved with the template's tokenizer (reused when there)."""
    out = work / f"base-{plan.layers}x1024-untrained"
    if fresh or not (out / "built.json").is_file():
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        source = template(work, plan)
        config = AutoConfig.from_pretrained(source)
        config.num_hidden_layers = plan.layers
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        say(f"saving an untrained {plan.layers}-block base ({model.num_parameters() / 1e6:.0f}M parameters) in {out}")
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(source).save_pretrained(out)
        (out / "built.json").write_text(json.dumps({"parameters": model.num_parameters(), "seed": 0}))
        del model
    return out


def write_samples(trace: Trace, path: Path) -> None:
    """The run's memory samples as CSV (seconds, RssAnon, VmRSS, checkpoint bytes), for plots and checks."""
    rows = [f"{s.t:.3f},{s.anon},{s.vmrss},{s.checkpoint}" for s in trace.samples]
    path.write_text("\n".join(["seconds,rss_anon,vm_rss,checkpoint_file_pages", *rows]) + "\n", encoding="utf-8")


def finetune(base: Path, out: Path, plan: Plan, extra: Sequence[str]) -> Measured:
    """``llmtune finetune -t generation --lora`` of ``base`` on builtin:instructions: its memory and metrics."""
    start = time.monotonic()
    trace = llmtune(["finetune", "-t", "generation", "--model", str(base), "-d", "builtin:instructions", "--lora",
                    "--max-steps", str(plan.finetune_steps), "--batch-size", str(plan.batch_size), "--lr", "1e-3",
                    "--seed", "0", "--gradient-checkpointing", "--set", f"train.max_length={plan.max_length}",
                    "--set", f"data.max_eval_samples={plan.eval_rows}", "--set", "train.eval_steps=100000",
                    *extra, "-o", str(out), "--overwrite"], out.parent / f"{out.name}.log")
    wall = time.monotonic() - start
    write_samples(trace, out.parent / f"{out.name}-memory.csv")
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    ready = trace.first(READY_MARKER)
    if ready == float("inf"):
        log = out.parent / f"{out.name}.log"
        raise RuntimeError(f"no '{READY_MARKER}' line in {log}: cannot tell loading from training")
    return Measured(trace.peak_working_set(ready), trace.peak_anon(), trace.peak_vmrss(), trace.max_rss,
                    float(metrics["eval_loss"]), 1 / float(metrics["train_steady_steps_per_second"]), wall)


def rows(fp32: Measured, int8: Measured, runtime: int, note: str) -> list[Row]:
    """The table: working set less runtime (target), eval loss (target), anonymous/whole peaks, step time."""
    return [
        Row(NAME, "peak working set (RssAnon + checkpoint pages in use) less runtime RssAnon, int8 vs fp32",
            (int8.working_set - runtime) / GIB, (fp32.working_set - runtime) / GIB, "GiB",
            Target("<=", MEMORY_TARGET, of="ratio"), note),
        Row(NAME, "final eval loss, int8 vs fp32 base", int8.eval_loss, fp32.eval_loss, "nats",
            Target("<=", 1 + LOSS_TOLERANCE, of="ratio")),
        Row(NAME, "peak RssAnon less runtime RssAnon (fp32 weights are file-backed: not in it)",
            (int8.anon - runtime) / GIB, (fp32.anon - runtime) / GIB, "GiB"),
        Row(NAME, "peak VmRSS of the finetune process (all pages, sampled)", int8.vmrss / GIB, fp32.vmrss / GIB, "GiB"),
        Row(NAME, "ru_maxrss of the finetune process (wait4)", int8.max_rss / GIB, fp32.max_rss / GIB, "GiB"),
        Row(NAME, "steady step time", int8.step_seconds, fp32.step_seconds, "s"),
    ]


def run(quick: bool, *, fresh: bool = False) -> list[Row]:
    """Build (or reuse) the base, fine-tune it with LoRA on fp32 and on int8; the ``run_all`` entry point."""
    plan = QUICK if quick else FULL
    work = work_dir(NAME)
    base = base_model(work, plan, fresh)
    wait_for_quiet()
    with CpuWatch() as watch:
        runtime = runtime_anon(work)
        fp32 = finetune(base, work / "lora-fp32", plan, [])
        int8 = finetune(base, work / "lora-int8", plan, ["--quantize-base", "int8"])
    built = json.loads((base / "built.json").read_text())
    load = contention_note([watch.share])
    note = (f"Llama {plan.layers}x1024, {built['parameters'] / 1e6:.0f}M parameters, vocab {VOCAB}, untrained "
            f"(random init, seed 0); LoRA finetune on builtin:instructions, {plan.finetune_steps} steps x batch "
            f"{plan.batch_size} x <= {plan.max_length} tokens, seed 0, eval on {plan.eval_rows} validation rows; "
            f"checkpoint pages count from the '{READY_MARKER}' line on; runtime subtracted: "
            f"{runtime / GIB:.2f} GiB (peak RssAnon of `{RUNTIME_IMPORTS}`); wall fp32 {fp32.wall_seconds:.0f}s, "
            f"int8 {int8.wall_seconds:.0f}s" + (f"; {load}" if load else ""))
    return rows(fp32, int8, runtime, note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny runs (a smoke test, not a measurement)")
    parser.add_argument("--fresh", action="store_true", help="build the base again even if a saved one is there")
    args = parser.parse_args()
    report(run(args.quick, fresh=args.fresh), quick=args.quick)


if __name__ == "__main__":
    main()
