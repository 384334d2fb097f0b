"""Does cleaning pay? Pre-train the default model on a dirty web corpus and on its cleaned version, score both
on the same clean held-out text.

    .venv/bin/python bench/clean_pretrain.py                  # 100 optimizer steps per run, seeds 0 1 2 (~5 min)
    .venv/bin/python bench/clean_pretrain.py --steps 300      # several epochs of each corpus (see below)

The dirty corpus is ``bench/_clean_corpus.py`` built from the first 260 documents of the C4 sample
(``../shared/datasets/web-c4-sample``, Raffel et al. 2020, ODC-BY): the real documents plus planted exact and
near copies, HTML pages, boilerplate lines, non-English paragraphs, mojibake and very short documents (155 of
363 rows, about 40 %; raw crawls hold at least as many duplicates and as much markup).
It is cleaned with ``llmtune data clean --recipe clean/web``. The held-out text is the last 40 C4 documents,
which appear in neither corpus, written twice: as they are (``heldout.txt``) and through the normalisation the
cleaner applies (``heldout-normalized.txt``: ftfy, NFKC, whitespace), since ftfy straightens quotes that C4 keeps.

Both runs are the same command except ``--dataset``: ``llmtune pretrain --arch llama`` (the default recipe,
``pretrain/llama-tiny``: tokenizer trained on the run's own corpus with the same settings) for a fixed number of
optimizer steps, not a time budget, so the comparison does not depend on how busy the machine is (both models have
the same size and blocks, so equal steps are equal compute and, on a quiet machine, equal time). Each model is then
scored with ``llmtune eval --task lm`` (bits/char does not depend on the tokenizer).

The default 100 steps x 16 blocks x 128 tokens stay under one epoch of either corpus (the cleaned one holds ~108 steps
of blocks, the dirty one ~162): the regime of real pre-training, where the corpus outlasts the compute budget and every
token spent on a copy, a page of markup or another language is a token of clean text not seen. With only 260 real
documents, ``--steps 300`` instead repeats the cleaned corpus ~2.8 times and the dirty one ~1.9 times; there the
dirty corpus's extra (near-)copies and markup pages of the same documents act as data augmentation against the
repetition, and cleaning no longer pays (measured: dirty 2.991 vs cleaned 3.006 bits/char at 300 steps).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import _clean_corpus as corpus
from common import Row, Target, llmtune_argv, say, work_dir

NAME = "clean_pretrain"
TRAIN_DOCS, TOTAL_DOCS = 260, 300
FULL_STEPS, QUICK_STEPS = 100, 60
SEEDS, QUICK_SEEDS = (0, 1, 2), (0,)
HELDOUT = ("heldout.txt", "heldout-normalized.txt")


@dataclass
class Result:
    """One corpus, its size and what the model trained on it scores on each held-out file."""

    corpus: str
    seed: int
    docs: int
    chars: int
    steps: int
    bits_per_char: dict[str, float]


def call(args: list[str], log: Path) -> None:
    """Run ``llmtune ARGS`` as a user would; output goes to ``log``; a failure raises with its last lines."""
    argv = [*llmtune_argv(), *args]
    say(f"$ {shlex.join(argv)}  (log: {log})")
    with log.open("w", encoding="utf-8") as fh:
        proc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8").strip().splitlines()[-3:]
        raise RuntimeError(f"llmtune {args[0]} exited {proc.returncode}: {' | '.join(tail)}")


def read_texts(path: Path) -> list[str]:
    """The ``text`` of every row of a JSON Lines file, or of every ``*.jsonl`` file of a folder."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return [json.loads(line)["text"] for f in files for line in f.read_text(encoding="utf-8").splitlines() if line]


def write_heldout(folder: Path) -> list[Path]:
    """The last C4 documents (in no training corpus) as text files, raw and normalised like the cleaner does."""
    from llmtune.config.clean import NormalizeConfig
    from llmtune.data.clean.normalize import normalize_text

    docs = corpus.load_c4(TOTAL_DOCS)[TRAIN_DOCS:]
    versions = (docs, [normalize_text(d, NormalizeConfig()) for d in docs])
    paths = []
    for name, texts in zip(HELDOUT, versions):
        paths.append(folder / name)
        paths[-1].write_text("\n".join(texts) + "\n", encoding="utf-8")
    return paths


def last_step(run_dir: Path) -> int:
    """The last optimizer step the run logged."""
    lines = (run_dir / "logs" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return max((json.loads(line).get("step", 0) for line in lines if line.strip()), default=0)


def bits_per_char(run_dir: Path, heldout: Path, out: Path) -> float:
    """``llmtune eval --task lm`` of the model in ``run_dir`` on ``heldout``."""
    call(["eval", "--model", str(run_dir), "--dataset", str(heldout), "--task", "lm", "--output-dir", str(out),
          "--overwrite"], out.with_suffix(".log"))
    metrics = json.loads((out / "eval_metrics.json").read_text(encoding="utf-8"))
    return float(metrics.get("eval_bits_per_char", metrics.get("bits_per_char")))


def train_and_score(name: str, data: Path, steps: int, seed: int, heldout: list[Path], work: Path) -> Result:
    """Pre-train on ``data`` for ``steps`` optimizer steps, then score the model on each held-out file."""
    run_dir = work / f"model-{name}-seed{seed}"
    call(["pretrain", "--arch", "llama", "--dataset", str(data), "--eval-dataset", str(heldout[0]),
          "--set", "train.time_budget=null", "--max-steps", str(steps), "--set", f"train.eval_steps={steps}",
          "--set", f"train.seed={seed}", "--output-dir", str(run_dir), "--overwrite"], run_dir.with_suffix(".log"))
    texts = read_texts(data)
    # pretrain already scored heldout[0] at its last step, with the same code as `llmtune eval` (checked: equal to
    # 4 decimals); the other files go through `llmtune eval`.
    scores = {heldout[0].name: float(json.loads((run_dir / "metrics.json").read_text())["eval_bits_per_char"])}
    scores.update({h.name: bits_per_char(run_dir, h, work / f"eval-{name}-seed{seed}-{h.stem}") for h in heldout[1:]})
    return Result(name, seed, len(texts), sum(len(t) for t in texts), last_step(run_dir), scores)


def measure(steps: int, seeds: tuple[int, ...]) -> list[Result]:
    """Build, clean, train twice, score (see the module docstring)."""
    work = work_dir("clean_pretrain")
    raw = corpus.write(corpus.build(TRAIN_DOCS), work / "dirty.jsonl")
    cleaned = work / "cleaned"
    call(["data", "clean", "--dataset", str(raw), "--recipe", "clean/web", "--output-dir", str(cleaned),
          "--overwrite"], work / "clean.log")
    heldout = write_heldout(work)
    corpora = (("dirty", raw), ("cleaned", cleaned))
    return [train_and_score(name, data, steps, seed, heldout, work) for seed in seeds for name, data in corpora]


def table(results: list[Result]) -> str:
    """The results as one Markdown table."""
    head = ["corpus", "seed", "documents", "characters", "steps", *(f"bits/char {h}" for h in HELDOUT)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.corpus, str(r.seed), f"{r.docs:,}", f"{r.chars:,}", str(r.steps), *(f"{r.bits_per_char[h]:.3f}" for h in HELDOUT)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_bits(results: list[Result], corpus_name: str, heldout: str) -> float:
    """Mean bits/char over seeds of the models trained on ``corpus_name``."""
    values = [r.bits_per_char[heldout] for r in results if r.corpus == corpus_name]
    return sum(values) / len(values)


def run(quick: bool, steps: int | None = None) -> list[Row]:
    """The ``run_all`` entry point: cleaned bits/char against dirty bits/char, mean over seeds (target: ratio < 1)."""
    seeds = QUICK_SEEDS if quick else SEEDS
    results = measure(steps or (QUICK_STEPS if quick else FULL_STEPS), seeds)
    dirty, cleaned = results[0], results[1]
    note = (f"llama-tiny, {cleaned.steps} steps each, mean of seeds {', '.join(map(str, seeds))}; dirty {dirty.docs} "
            f"docs / {dirty.chars:,} chars, cleaned {cleaned.docs} docs / {cleaned.chars:,} chars (clean/web); "
            f"40 held-out C4 documents")
    return [Row(NAME, f"held-out bits/char ({h}), cleaned vs dirty corpus", mean_bits(results, "cleaned", h),
                mean_bits(results, "dirty", h), "bits/char", Target("<", 1.0, of="ratio"), note) for h in HELDOUT]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=FULL_STEPS, help="optimizer steps of each pre-training run")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated training seeds")
    args = parser.parse_args()
    results = measure(args.steps, tuple(int(s) for s in args.seeds.split(",")))
    print(table(results), flush=True)
    for h in HELDOUT:
        print(f"mean bits/char on {h}: dirty {mean_bits(results, 'dirty', h):.3f}, "
              f"cleaned {mean_bits(results, 'cleaned', h):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
