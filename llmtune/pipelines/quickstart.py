"""``llmtune quickstart``: the whole product on the builtin data, one stage after another.

    tokenizer -> pre-train a tiny Llama -> eval (bits/char) -> SFT on instructions -> eval (+ greedy answers)
      -> DPO of the SFT model on preference pairs -> eval (held-out preference accuracy, SFT vs DPO)
      -> pre-train a tiny BERT (masked LM) -> classifier -> eval -> QA -> eval -> generate from the SFT model
      -> serve the SFT model on a free loopback port, send it one request over HTTP, stop it

Every stage calls its command's own runner (``llmtune.runs.*.run``) with a config built the way the command
builds it (``load_config(command, recipe, flags, sets)``), so the quickstart runs exactly what the commands
run; only the recipes' time budgets are shortened so the whole path fits in about 8 minutes on 2 CPU cores.
The outputs are the commands' usual run dirs under one folder, plus ``summary.md`` / ``summary.json``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from llmtune.errors import ConfigError
from llmtune.dist import log

LM_RECIPE, SFT_RECIPE = "pretrain/llama-tiny", "generation/sft-tiny-cpu"
DPO_RECIPE = "dpo/tiny-cpu"
DPO_STEPS, DPO_LR, DPO_BUDGET = 240, 5e-4, "90s"  # held-out reward accuracy 0.91 from the demo SFT model (0.84 at 60 steps), ~1 min
MLM_RECIPE, CLS_RECIPE, QA_RECIPE = "pretrain/bert-tiny-mlm", "classification/tiny-cpu", "qa/tiny-cpu"
# Held-out instructions of different kinds (rows of builtin:instructions' validation split) for the last stage.
GENERATE_ROWS = (0, 5, 68, 88, 26)
SUMMARY_FILES = ("summary.md", "summary.json")


@dataclass
class QuickstartOptions:
    """What ``llmtune quickstart`` takes (budgets are per stage; the defaults fit 10 minutes on 2 cores)."""

    output_dir: str = "runs/quickstart"
    lm_budget: str = "100s"  # pre-training the tiny Llama
    mlm_budget: str = "60s"  # pre-training the tiny BERT
    finetune_budget: str = "90s"  # a cap on each fine-tuning stage (they normally finish their epochs sooner)
    max_steps: Optional[int] = None  # cap every training stage (smoke tests)
    max_samples: Optional[int] = None  # at most N training rows and N evaluation rows per stage
    overwrite: bool = False


@dataclass
class StageResult:
    """One row of the summary table."""

    stage: str
    metric: str
    baseline: str
    seconds: float
    path: str


@dataclass
class Quickstart:
    """The options plus what earlier stages produced (later stages read it)."""

    opts: QuickstartOptions
    root: Path
    results: list[StageResult] = field(default_factory=list)
    vocab_size: int = 0
    generations: list[dict[str, Any]] = field(default_factory=list)
    served: dict[str, Any] = field(default_factory=dict)  # the serve stage's request and reply
    startup_seconds: float = 0.0

    @property
    def total_seconds(self) -> float:
        return self.startup_seconds + sum(r.seconds for r in self.results)

    def dir(self, name: str) -> Path:
        return self.root / name

    def config(self, command: str, recipe: Optional[str], out: Optional[Path], train: bool = True, **flags: Any) -> Any:
        """The validated config of one stage: recipe < ``flags`` (``a__b=v`` sets ``a.b``) < quickstart-wide caps.

        ``train`` stages get the ``max_steps``/``max_samples`` caps; evaluations only the row cap.
        """
        from llmtune.config import load_config

        o = self.opts
        caps = {"train.output_dir": str(out) if out else None, "train.overwrite": o.overwrite or None,
                "data.max_samples": o.max_samples, "train.max_steps": o.max_steps if train else None,
                "data.max_eval_samples": o.max_samples if train else None}
        merged = {k.replace("__", "."): v for k, v in flags.items()}
        return load_config(command, recipe, {**merged, **{k: v for k, v in caps.items() if v is not None}})


def run(opts: QuickstartOptions, on_stage: Optional[Callable[[int, int, str], None]] = None) -> Quickstart:
    """Run every stage in order; ``on_stage(i, n, title)`` is called before each (for a header).

    Raises:
        ConfigError: ``output_dir`` already holds files and ``overwrite`` is off.
        LlmtuneError: Whatever a stage's runner raises (the stage is named in the log before it starts).
    """
    root = Path(opts.output_dir).expanduser()
    if root.is_dir() and any(root.iterdir()) and not opts.overwrite:
        raise ConfigError(f"{root} is not empty; pass --overwrite to replace the quickstart there, "
                          "or choose another --output-dir")
    root.mkdir(parents=True, exist_ok=True)
    qs = Quickstart(opts, root, startup_seconds=load_libraries())
    for i, (title, step) in enumerate(STAGES, start=1):
        if on_stage is not None:
            on_stage(i, len(STAGES), title)
        log(f"quickstart stage {i}/{len(STAGES)}: {title}")
        started = time.monotonic()
        result = step(qs)
        result.seconds = time.monotonic() - started
        qs.results.append(result)
    write_summary(qs)
    return qs


def load_libraries() -> float:
    """Import torch, datasets and transformers' Trainer once, before the first stage; returns the seconds taken.

    A time budget counts from the start of its run, so the ~10-30 s of first imports would otherwise come out
    of the first pre-training stage's training time.
    """
    started = time.monotonic()
    log("loading torch, datasets and transformers")
    import datasets  # noqa: F401
    import torch  # noqa: F401
    from transformers import Trainer  # noqa: F401

    return time.monotonic() - started


# --------------------------------------------------------------------------------------------------
# Stages: each runs one runner and returns its summary row (the time is filled in by ``run``)
# --------------------------------------------------------------------------------------------------


def tokenizer_stage(qs: Quickstart) -> StageResult:
    """A BPE tokenizer with the settings of the Llama recipe, trained on builtin:text."""
    from llmtune.config import read_recipe
    from llmtune.runs import tokenizer

    recipe = read_recipe(LM_RECIPE)
    tok = recipe.get("tokenizer", {})
    out = qs.dir("tokenizer")
    cfg = qs.config("tokenizer", None, out, train=False, data__dataset="builtin:text", tokenizer__type=tok.get("type"),
                    tokenizer__vocab_size=tok.get("vocab_size"),
                    tokenizer__model_max_length=recipe.get("train", {}).get("max_length"))
    m = tokenizer.run(cfg).metrics
    qs.vocab_size = int(m["vocab_size"])
    return StageResult("tokenizer (BPE)", f"{m.get('heldout_chars_per_token', 0):.2f} chars/token, "
                       f"vocab {qs.vocab_size:,}", "1 char/token (characters)", 0.0, str(out))


def lm_stage(qs: Quickstart) -> StageResult:
    """Pre-train the tiny Llama within ``lm_budget`` on the tokenizer above, then ``llmtune eval`` it."""
    from llmtune.runs import evaluate, pretrain

    out = qs.dir("llama-tiny")
    cfg = qs.config("pretrain", LM_RECIPE, out, model__tokenizer=str(qs.dir("tokenizer")),
                    train__time_budget=qs.opts.lm_budget, train__eval_steps=100)
    pretrain.run(cfg)
    m = evaluate.run(qs.config("eval", None, out / "eval", train=False, model__name_or_path=str(out),
                               data__dataset="builtin:text", task="lm")).metrics
    evals = logged(out, "eval_bits_per_char")
    falling = f" (first eval {evals[0]:.2f})" if len(evals) > 1 else ""
    uniform = math.log2(qs.vocab_size) * m["eval_tokens"] / m["eval_chars"] if qs.vocab_size else float("nan")
    return StageResult("pre-train causal LM (Llama)", f"{m['eval_bits_per_char']:.2f} bits/char{falling}",
                       f"{uniform:.2f} bits/char (uniform guess)", 0.0, str(out))


def sft_stage(qs: Quickstart) -> StageResult:
    """Instruction SFT of the pre-trained Llama; eval its response perplexity before and after, and greedy answers."""
    from llmtune.runs import evaluate, finetune

    base, out = qs.dir("llama-tiny"), qs.dir("sft")
    finetune.run(qs.config("finetune", SFT_RECIPE, out, model__name_or_path=str(base),
                           train__time_budget=qs.opts.finetune_budget))
    before = evaluate.run(qs.config("eval", None, base / "eval-instructions", train=False, task="generation",
                                    model__name_or_path=str(base), data__dataset="builtin:instructions")).metrics
    m = evaluate.run(qs.config("eval", None, out / "eval", train=False, model__name_or_path=str(out),
                               data__dataset="builtin:instructions", eval__generate=True,
                               generate__max_new_tokens=48)).metrics
    return StageResult("SFT on instructions", f"response perplexity {m['eval_perplexity']:.2f}, "
                       f"exact match {100 * m['eval_exact_match']:.0f} %",
                       f"perplexity {before['eval_perplexity']:.2f} before SFT", 0.0, str(out))


def dpo_stage(qs: Quickstart) -> StageResult:
    """DPO of the SFT model (``DPO_STEPS`` steps of the dpo recipe); ``eval --task dpo`` of both on held-out pairs.

    The row is the share of builtin:preferences validation pairs whose chosen answer the model scores
    above the rejected one, before (SFT model) and after DPO. Skipped when the dpo extra (TRL) is missing.
    """
    import importlib.util

    from llmtune.runs import evaluate, finetune

    stage, sft, out = "DPO on preferences", qs.dir("sft"), qs.dir("dpo")
    if importlib.util.find_spec("trl") is None:
        return StageResult(stage, "skipped: needs pip install 'llmtune[dpo]'", "-", 0.0, "-")
    finetune.run(qs.config("finetune", DPO_RECIPE, out, model__name_or_path=str(sft), train__max_steps=DPO_STEPS,
                           train__lr=DPO_LR, train__time_budget=DPO_BUDGET))
    scores = [evaluate.run(qs.config("eval", None, folder / "eval-preferences", train=False, task="dpo",
                                     model__name_or_path=str(folder), data__dataset="builtin:preferences")).metrics
              for folder in (sft, out)]
    before, after = (m["eval_preference_accuracy"] for m in scores)
    return StageResult(stage, f"held-out preference accuracy {100 * after:.0f} %",
                       f"{100 * before:.0f} % (SFT model)", 0.0, str(out))


def mlm_stage(qs: Quickstart) -> StageResult:
    """Pre-train the tiny BERT (masked LM, its own WordPiece tokenizer) within ``mlm_budget`` on ``encoder_corpus``."""
    from llmtune.runs import pretrain

    out = qs.dir("bert-tiny")
    train, validation = encoder_corpus(qs.dir("encoder-corpus"))
    # Many epochs: the time budget, not the data, decides when to stop.
    m = pretrain.run(qs.config("pretrain", MLM_RECIPE, out, train__time_budget=qs.opts.mlm_budget, train__epochs=20,
                               data__dataset=str(train), data__eval_dataset=str(validation))).metrics
    evals = logged(out, "eval_loss")
    falling = f" (first eval {math.exp(evals[0]):,.1f})" if len(evals) > 1 else ""
    vocab = json.loads((out / "config.json").read_text(encoding="utf-8")).get("vocab_size")
    return StageResult("pre-train masked LM (BERT)",
                       f"masked-token perplexity {math.exp(m['eval_loss']):,.1f}{falling}",
                       f"{vocab:,} (uniform guess)" if vocab else "-", 0.0, str(out))


def encoder_corpus(folder: Path) -> tuple[Path, Path]:
    """``train.txt`` / ``validation.txt``: builtin:text plus the review texts of builtin:classification, no labels.

    The encoder is pre-trained on the text it will be fine-tuned on (as one would pre-train on in-domain text):
    a tokenizer trained on builtin:text alone splits review words like "flimsy" into single letters.
    """
    from llmtune.data.builtin import builtin_dir

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "validation"):
        prose = (builtin_dir("text") / f"{split}.txt").read_text(encoding="utf-8").rstrip("\n")
        rows = (builtin_dir("classification") / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        reviews = [json.loads(line)["text"] for line in rows if line.strip()]
        path = folder / f"{split}.txt"
        path.write_text("\n".join([prose, *reviews]) + "\n", encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def encoder_stage(qs: Quickstart, recipe: str, name: str, dataset: str) -> tuple[Path, dict[str, Any]]:
    """Fine-tune the tiny BERT with ``recipe`` into ``DIR/name``, then ``llmtune eval`` it on ``dataset``."""
    from llmtune.runs import evaluate, finetune

    out = qs.dir(name)
    finetune.run(qs.config("finetune", recipe, out, model__name_or_path=str(qs.dir("bert-tiny")),
                           train__time_budget=qs.opts.finetune_budget))
    return out, evaluate.run(qs.config("eval", None, out / "eval", train=False, model__name_or_path=str(out),
                                       data__dataset=dataset)).metrics


def classification_stage(qs: Quickstart) -> StageResult:
    """A sentiment classifier from the tiny BERT, evaluated with chance and majority-class baselines."""
    out, m = encoder_stage(qs, CLS_RECIPE, "classifier", "builtin:classification")
    chance, majority = label_baselines(m)
    return StageResult("classifier (reviews)", f"accuracy {100 * m['eval_accuracy']:.1f} %, "
                       f"macro F1 {m['eval_f1_macro']:.2f}",
                       f"chance {100 * chance:.1f} %, majority {100 * majority:.1f} %", 0.0, str(out))


def qa_stage(qs: Quickstart) -> StageResult:
    """Extractive QA from the tiny BERT, evaluated with SQuAD exact match and F1."""
    out, m = encoder_stage(qs, QA_RECIPE, "qa", "builtin:qa")
    return StageResult("extractive QA", f"exact match {m['eval_exact_match']:.1f}, F1 {m['eval_f1']:.1f} (of 100)",
                       "-", 0.0, str(out))


def generate_stage(qs: Quickstart) -> StageResult:
    """Greedy answers of the SFT model to a few held-out instructions, via ``llmtune generate``."""
    from llmtune.runs.generate import GenerateInputs
    from llmtune.runs.generate import run as generate

    rows = held_out_instructions()
    prompts, out = qs.dir("generate-prompts.jsonl"), qs.dir("generations.jsonl")
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p, _ in rows), encoding="utf-8")
    cfg = qs.config("generate", None, None, train=False, model__name_or_path=str(qs.dir("sft")),
                    generate__temperature=0.0, generate__max_new_tokens=48)
    stats = generate(cfg, GenerateInputs(file=str(prompts), output=str(out)))
    completions = [json.loads(line)["completion"].strip() for line in out.read_text(encoding="utf-8").splitlines()]
    qs.generations = [{"prompt": p, "completion": c, "reference": r} for (p, r), c in zip(rows, completions)]
    right = sum(c == r for (_, r), c in zip(rows, completions))
    return StageResult("generate (SFT model)", f"{right} of {len(rows)} answers exactly right, "
                       f"{stats.tokens_per_second:,.0f} tokens/s", "-", 0.0, str(out))


def serve_stage(qs: Quickstart) -> StageResult:
    """``llmtune serve`` the SFT model on a free loopback port, POST one held-out instruction, stop the server.

    The request goes to ``/v1/completions`` with the instruction in the alpaca prompt the model was
    fine-tuned on (a chat request would be rendered with a chat template it never saw), greedy, so the
    answer should be the generate stage's for the same prompt. Skipped when the serve extra is missing.
    """
    from llmtune.runs import serve

    stage = "serve (SFT model, HTTP)"
    if serve.missing_serve_extra():
        return StageResult(stage, f"skipped: needs {serve.EXTRA_HINT}", "-", 0.0, "-")
    cfg = qs.config("serve", None, None, train=False, model__name_or_path=str(qs.dir("sft")), serve__host="127.0.0.1",
                    serve__port=0)
    prompt, reference = held_out_instructions()[0]
    body = {"prompt": prompt, "max_tokens": 48, "temperature": 0}
    with serve.in_background(cfg) as url:
        reply = post_json(f"{url}/v1/completions", body)
    completion = reply["choices"][0]["text"].strip()
    tokens = int(reply["usage"]["completion_tokens"])
    qs.served = {"url": f"{url}/v1/completions", "prompt": prompt, "completion": completion, "reference": reference,
                 "completion_tokens": tokens, "finish_reason": reply["choices"][0]["finish_reason"]}
    same = "" if not qs.generations else ", same as generate" if qs.generations[0]["completion"] == completion \
        else ", differs from generate"
    return StageResult(stage, f"1 request answered ({tokens} token{'' if tokens == 1 else 's'}{same}); server stopped",
                       "-", 0.0, f"{url}/v1")


def post_json(url: str, body: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """POST ``body`` as JSON to ``url`` with the standard library (no proxy: the server is on loopback)."""
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


STAGES: list[tuple[str, Callable[[Quickstart], StageResult]]] = [
    ("train a BPE tokenizer on builtin:text", tokenizer_stage),
    (f"pre-train a tiny Llama ({LM_RECIPE}) and evaluate it", lm_stage),
    (f"instruction SFT ({SFT_RECIPE}) and evaluate it", sft_stage),
    (f"DPO of the SFT model ({DPO_RECIPE}) and evaluate both on held-out pairs", dpo_stage),
    (f"pre-train a tiny BERT ({MLM_RECIPE})", mlm_stage),
    (f"fine-tune a classifier ({CLS_RECIPE}) and evaluate it", classification_stage),
    (f"fine-tune extractive QA ({QA_RECIPE}) and evaluate it", qa_stage),
    ("generate from the SFT model", generate_stage),
    ("serve the SFT model: start, one request, stop", serve_stage),
]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def logged(run_dir: Path, key: str) -> list[float]:
    """Every value of ``key`` in a run's ``logs/metrics.jsonl``, in order (empty when never logged)."""
    path = run_dir / "logs" / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]


def label_baselines(metrics: dict[str, Any]) -> tuple[float, float]:
    """Chance (1 / the model's number of classes) and majority-class accuracy (from the per-class supports)."""
    rows = metrics.get("per_class") or []
    supports = [int(r.get("support", 0)) for r in rows if isinstance(r, dict)]
    if not supports or sum(supports) == 0:
        return float("nan"), float("nan")
    return 1.0 / len(metrics.get("labels") or supports), max(supports) / sum(supports)


def held_out_instructions() -> list[tuple[str, str]]:
    """(alpaca prompt, reference answer) for the ``GENERATE_ROWS`` of builtin:instructions' validation split."""
    from llmtune.data.builtin import builtin_dir
    from llmtune.tasks.chat_formats import alpaca_prompt

    lines = (builtin_dir("instructions") / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(lines[i]) for i in GENERATE_ROWS if i < len(lines)]
    return [(alpaca_prompt(r["instruction"], r.get("input")), str(r["output"]).strip()) for r in rows]


def artefacts(root: Path) -> tuple[list[Path], list[Path]]:
    """The plots (PNG) and reports (report.md) the stages wrote under ``root``."""
    return sorted(root.glob("**/plots/*.png")), sorted(root.glob("**/report.md"))


def write_summary(qs: Quickstart) -> None:
    """``summary.json`` (every row and generation) and ``summary.md`` (the same as a table) in the root."""
    from llmtune.rundir import atomic_write_text

    total = qs.total_seconds
    data = {"total_seconds": total, "startup_seconds": qs.startup_seconds, "stages": [asdict(r) for r in qs.results],
            "generations": qs.generations, "served": qs.served}
    atomic_write_text(qs.root / "summary.json", json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    lines = ["# llmtune quickstart", "", "| stage | result | baseline | time | output |", "|---|---|---|---|---|"]
    lines += [f"| {r.stage} | {r.metric} | {r.baseline} | {r.seconds:.0f} s | `{r.path}` |" for r in qs.results]
    lines += ["", f"Total: {total / 60:.1f} min (loading the libraries: {qs.startup_seconds:.0f} s).", "",
              "## Generations (greedy, held-out instructions)", ""]
    for g in qs.generations:
        lines += [f"- **{g['prompt'].splitlines()[1]}** -> `{g['completion']}` (reference: `{g['reference']}`)"]
    if qs.served:
        lines += ["", "## Served (greedy, one request to llmtune serve)", "",
                  f"- POST `{qs.served['url']}` **{qs.served['prompt'].splitlines()[1]}** -> "
                  f"`{qs.served['completion']}` (reference: `{qs.served['reference']}`)"]
    plots, reports = artefacts(qs.root)
    lines += ["", "## Plots", ""] + [f"- `{p}`" for p in plots] + ["", "## Reports", ""] + [f"- `{p}`" for p in reports]
    atomic_write_text(qs.root / "summary.md", "\n".join(lines) + "\n")
