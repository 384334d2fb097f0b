"""DPO quality (issue #20): held-out reward accuracy and greedy exact match, SFT vs SFT + DPO.

The chain a user runs, each step an ``llmtune`` command (run dirs and logs under ``bench/_work/dpo_quality``):

1. ``llmtune pretrain --recipe pretrain/llama-tiny`` for ``PRETRAIN_STEPS`` optimizer steps (not the
   recipe's time budget, so the model and every figure below do not depend on machine load);
2. ``llmtune finetune --recipe generation/sft-tiny-cpu --epochs 15`` (instruction SFT on
   ``builtin:instructions``; ``SFT_SETS``);
3. DPO settings chosen on a *dev* split carved from the training pairs: every 10th pair of
   ``builtin:preferences``' train split is dev, the other 900 train ``dpo/tiny-cpu`` once per entry of
   ``CANDIDATES``; the candidate with the best dev reward accuracy is the DPO model. The 100 validation
   pairs (instructions no training row has) are scored only for that model, once;
4. ``llmtune eval --task dpo`` on the validation pairs for the SFT model (the reference) and the DPO
   model. Reward accuracy, as TRL counts it: the share of pairs whose implicit reward
   ``beta * (log pi(y|x) - log pi_ref(y|x))`` is higher for the chosen response than for the rejected one
   (before DPO the policy is the reference and every pair ties: 0.5 expected from a coin). Target >= 0.9;
5. ``llmtune eval --task generation --generate`` on ``builtin:instructions`` validation (100 held-out
   instructions) for both models: greedy answers exactly right. Target: more after DPO than after SFT.

Every step runs a fixed number of steps or epochs, so the results are the same on a loaded machine (only
slower). Run: ``.venv/bin/python bench/dpo_quality.py [--quick] [--fresh]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import Row, Target, llmtune_argv, report, say, work_dir

NAME = "dpo_quality"
PRETRAIN_STEPS, QUICK_PRETRAIN_STEPS = 1500, 30
# The SFT recipe's 5 epochs leave the tiny model giving one fixed answer per kind of instruction (0 of 100 exactly
# right), where a lucky constant decides the exact-match row; 15 epochs make it use its input (7 of 100).
SFT_SETS: tuple[str, ...] = ("train.epochs=15",)
DPO_RECIPE = "dpo/tiny-cpu"
# (label, --set overrides of the dpo recipe): compared on the dev pairs only.
# The grid behind the recipe's settings (lr 1e-3, 3 epochs, beta 0.1, sigmoid; see recipes/dpo/tiny-cpu.yaml).
CANDIDATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("recipe", ()),
    ("lr 5e-4", ("train.lr=5e-4",)),
    ("lr 2e-3", ("train.lr=2e-3",)),
    ("6 epochs", ("train.epochs=6",)),
    ("beta 0.5", ("dpo.beta=0.5",)),
    ("ipo", ("dpo.loss_type=ipo",)),
    ("dpo + sft", ("dpo.loss_type=[sigmoid,sft]",)),  # DPO plus an SFT term on the chosen answers (weights 1, 1)
)
QUICK_EVAL: list[str] = []  # --quick: ["--max-samples", "20"]
DEV_EVERY = 10  # every 10th training pair is dev
TARGET_REWARD_ACCURACY = 0.9


@dataclass
class Candidate:
    """One DPO run trained on the fit pairs and its dev reward accuracy."""

    label: str
    sets: tuple[str, ...]
    run_dir: Path
    dev_accuracy: float


def _sets(items: Sequence[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _step(args: Sequence[str], out: Path, fresh: bool) -> Path:
    """Run one llmtune command whose run dir is ``out`` unless a finished one is there (``--fresh``: always)."""
    if fresh or not (out / "run_complete.json").is_file():
        log = out.parent / f"{out.name}.log"
        say(f"llmtune {' '.join(args)}  (log: {log})")
        with log.open("w", encoding="utf-8") as f:
            proc = subprocess.run([*llmtune_argv(), *args, "--output-dir", str(out), "--overwrite"],
                                  stdout=f, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"llmtune {args[0]} exited {proc.returncode}; see {log}")
    return out


def split_pairs(train_file: Path, folder: Path) -> tuple[Path, Path]:
    """``fit.jsonl`` (9 of every 10 training pairs) and ``dev.jsonl`` (the 10th) in ``folder``."""
    lines = train_file.read_text(encoding="utf-8").splitlines(keepends=True)
    fit, dev = folder / "fit.jsonl", folder / "dev.jsonl"
    fit.write_text("".join(line for i, line in enumerate(lines) if i % DEV_EVERY != DEV_EVERY - 1), encoding="utf-8")
    dev.write_text("".join(line for i, line in enumerate(lines) if i % DEV_EVERY == DEV_EVERY - 1), encoding="utf-8")
    return fit, dev


def reward_accuracy(reference_eval: Path, policy_eval: Path) -> float:
    """Share of pairs whose chosen response gains more log-probability over the reference than the rejected one.

    Both folders are ``llmtune eval --task dpo`` run dirs on the same pairs (``predictions.jsonl``: one row
    per pair with ``logp_chosen`` and ``logp_rejected``); beta > 0 scales both rewards alike, so it drops
    out. A tie counts as wrong.
    """
    def rows(folder: Path) -> list[dict]:
        return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines() if line.strip()]

    ref, pol = rows(reference_eval), rows(policy_eval)
    if len(ref) != len(pol) or not ref:
        raise RuntimeError(f"{reference_eval} and {policy_eval} score different pairs ({len(ref)} vs {len(pol)})")
    wins = [(p["logp_chosen"] - r["logp_chosen"]) > (p["logp_rejected"] - r["logp_rejected"]) for r, p in zip(ref, pol)]
    return sum(wins) / len(wins)


def exact_answers(eval_dir: Path) -> tuple[int, int]:
    """(exactly right greedy answers, prompts) of an ``llmtune eval --generate`` run dir."""
    rows = [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text().splitlines() if line.strip()]
    return sum(bool(r["correct"]) for r in rows), len(rows)


def _eval_pairs(model: Path, data: list[str], out: Path, fresh: bool) -> Path:
    return _step(["eval", "-m", str(model), *data, "--task", "dpo", *QUICK_EVAL], out, fresh)


def choose(sft: Path, work: Path, quick: bool, fresh: bool) -> Candidate:
    """Train each candidate on the fit pairs; the one with the best dev reward accuracy (first on a tie)."""
    from llmtune.data.builtin import builtin_dir

    fit, dev = split_pairs(builtin_dir("preferences") / "train.jsonl", work)
    ref_dev = _eval_pairs(sft, ["-d", str(dev)], work / "eval-dev-sft", fresh)
    quick_sets = ("train.max_steps=3", "train.eval_steps=100000") if quick else ()
    best: Candidate | None = None
    for i, (label, sets) in enumerate(CANDIDATES):
        out = work / f"dpo-{i}"
        _step(["finetune", "--recipe", DPO_RECIPE, "-m", str(sft), "-d", str(fit), "--set",
               f"data.eval_dataset={dev}", *_sets((*sets, *quick_sets))], out, fresh)
        accuracy = reward_accuracy(ref_dev, _eval_pairs(out, ["-d", str(dev)], work / f"eval-dev-{i}", fresh))
        say(f"candidate {label}: dev reward accuracy {accuracy:.2f}")
        if best is None or accuracy > best.dev_accuracy:
            best = Candidate(label, sets, out, accuracy)
    assert best is not None, "no DPO candidates"
    return best


def run(quick: bool, fresh: bool = False) -> list[Row]:
    """The whole chain; the ``run_all`` entry point."""
    work = work_dir(NAME + ("-quick" if quick else ""))
    QUICK_EVAL[:] = ["--max-samples", "20"] if quick else []
    steps = QUICK_PRETRAIN_STEPS if quick else PRETRAIN_STEPS
    base = _step(["pretrain", "--recipe", "pretrain/llama-tiny", "--max-steps", str(steps),
                  "--set", "train.time_budget=null"], work / "llama-tiny", fresh)
    sft = _step(["finetune", "--recipe", "generation/sft-tiny-cpu", "-m", str(base),
                 *_sets((*SFT_SETS, *(("train.max_steps=5",) if quick else ())))], work / "sft", fresh)
    best = choose(sft, work, quick, fresh)
    held_out = ["-d", "builtin:preferences", "--split", "validation"]
    val_sft = _eval_pairs(sft, held_out, work / "eval-val-sft", fresh)
    accuracy = reward_accuracy(val_sft, _eval_pairs(best.run_dir, held_out, work / "eval-val-dpo", fresh))
    pairs = sum(1 for line in (val_sft / "predictions.jsonl").read_text().splitlines() if line.strip())
    answers = ["-d", "builtin:instructions", "--split", "validation", "--task", "generation", "--generate", *QUICK_EVAL]
    sft_right, n = exact_answers(_step(["eval", "-m", str(sft), *answers], work / "gen-sft", fresh))
    dpo_right, _ = exact_answers(_step(["eval", "-m", str(best.run_dir), *answers], work / "gen-dpo", fresh))
    shutil.copy(best.run_dir / "config.yaml", work / "chosen-dpo-config.yaml")
    settings = f"DPO settings '{best.label}' ({' '.join(best.sets) or 'recipe as shipped'}) chosen on " \
               f"every {DEV_EVERY}th training pair (dev reward accuracy {best.dev_accuracy:.2f})"
    chain = f"pretrain/llama-tiny {steps} steps -> generation/sft-tiny-cpu {' '.join(SFT_SETS)} -> {DPO_RECIPE}"
    return [
        Row(NAME, "held-out reward accuracy after DPO", accuracy, None, "fraction",
            Target(">=", TARGET_REWARD_ACCURACY), f"{pairs} builtin:preferences validation pairs; {chain}; {settings}"),
        Row(NAME, "greedy answers exactly right (SFT+DPO vs SFT)", dpo_right / n, sft_right / n, "fraction",
            Target(">", sft_right / n), f"{dpo_right} vs {sft_right} of {n} builtin:instructions validation prompts; "
            "llmtune eval --task generation --generate"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps per stage (a smoke test, not a measurement)")
    parser.add_argument("--fresh", action="store_true", help="run every stage again even if its run dir is finished")
    args = parser.parse_args()
    report(run(args.quick, args.fresh), quick=args.quick)


if __name__ == "__main__":
    main()
