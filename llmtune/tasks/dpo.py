"""Preference tuning of a causal LM (DPO and TRL's other pairwise losses) on TRL's ``DPOTrainer``.

TRL does the algorithm: the loss (``dpo.loss_type``: sigmoid = DPO, ipo, hinge, robust, apo_zero...),
the reference log-probabilities (from a frozen copy of the starting model; with ``--lora`` from the
same model with its adapters disabled, so no second copy is held; with
``dpo.precompute_ref_log_probs`` once for the whole data set before training) and the metrics it logs
at every logging step and evaluation: ``rewards/accuracies`` (share of pairs whose implicit reward
``beta * (log pi(y|x) - log pi_ref(y|x))`` is higher for the chosen response), ``rewards/margins``,
``rewards/chosen``/``rewards/rejected`` and ``logps/chosen``/``logps/rejected`` (summed response
log-probabilities).

llmtune does the rest, as for every task: the data layouts and their checks, tokenization and
prompt-first truncation (``preference_data``), all before the model loads; the engine's callbacks
(metrics.jsonl, progress, graceful stop, checkpoints), run dir and reports. The trainer is
``LlmtuneDPOTrainer`` (``tasks/dpo_trainer.py``): TRL's class under llmtune's Trainer behaviour.

``llmtune eval --task dpo`` needs no reference model: it scores each response's summed log-probability
under the model and reports ``eval_preference_accuracy`` (share of pairs whose chosen response is more
likely than the rejected one) with the mean log-probabilities and their margin. It is how a model
before and after DPO compares on held-out pairs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from llmtune.config.schema import RunConfig
from llmtune.dist import log
from llmtune.errors import ConfigError, DataError
from llmtune.modeling import IGNORE
from llmtune.tasks.base import MAP_BATCH_SIZE, Features, Record, longest_first, unsort
from llmtune.tasks.generation import special_prefix
from llmtune.tasks.preference_data import featurize_pairs, pair_format
from llmtune.tasks.registry import TASKS

INSTALL_HINT = "pip install 'llmtune[dpo]'"


def require_trl() -> None:
    """Raise ConfigError naming the extra when TRL is not installed."""
    if importlib.util.find_spec("trl") is None:
        raise ConfigError(f"finetune --task dpo trains with TRL, which is not installed; install it with: {INSTALL_HINT}")


def featurize(rows: Any, tokenizer: Any, fmt: str, max_length: int, max_prompt_length: Any,
              desc: str) -> tuple[Any, int, int]:
    """Token ids of every pair of ``rows``, fitted to ``max_length``; returns ``(features, truncated, dropped)``."""
    features = rows.map(
        featurize_pairs, batched=True, with_indices=True, batch_size=MAP_BATCH_SIZE, remove_columns=rows.column_names,
        desc=desc, fn_kwargs={"tokenizer": tokenizer, "fmt": fmt, "max_length": max_length,
                              "max_prompt_length": max_prompt_length, "prefix": special_prefix(tokenizer)},
    )
    kept = features.filter(lambda dropped: [not d for d in dropped], input_columns="dropped", batched=True,
                           batch_size=MAP_BATCH_SIZE, desc="dropping pairs cut to the same response")
    truncated, dropped = sum(features["truncated"]), len(features) - len(kept)
    return kept.remove_columns(["truncated", "dropped"]), truncated, dropped


def stop_at_eos(model: Any, tokenizer: Any) -> None:
    """Make ``generate`` stop at the eos token every trained response ends with."""
    eos, config = tokenizer.eos_token_id, getattr(model, "generation_config", None)
    if config is None or eos is None:
        return
    stops = config.eos_token_id
    stops = [] if stops is None else ([stops] if isinstance(stops, int) else list(stops))
    if eos not in stops:
        config.eos_token_id = [*stops, eos] if stops else eos
        log(f"generation stops at the tokenizer's eos {tokenizer.eos_token!r} too (added to generation_config)")


class DpoTask:
    """``finetune --task dpo``: checked, tokenized pairs and TRL's DPO trainer with the ``dpo`` settings."""

    name = "dpo"
    auto_class = "AutoModelForCausalLM"
    columns = TASKS["dpo"].columns

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.format = "pairs"
        self.tokenizer: Any = None
        self.counts: dict[str, int] = {}

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Responses end with eos: the tokenizer needs one."""
        from llmtune.tasks.lm import check_tokenizer

        check_tokenizer(tokenizer, masked=False)

    def prepare(self, data: Any, tokenizer: Any, max_length: int) -> Features:
        """Check and tokenize both splits (cached by ``Dataset.map``), counting cut and dropped pairs.

        Raises:
            DataError: A bad row (see ``preference_data``), or no pair left in the training data.
        """
        sources = getattr(data, "sources", {})
        self.tokenizer = tokenizer
        self.format = pair_format(data.train.column_names, self.cfg.data.format, sources.get("train", "the data"))
        notes = [f"preference data: {self.format} rows; {self._loss_note()}"]
        train = self._split(data.train, tokenizer, max_length, "train", sources.get("train", "the training data"), notes)
        evaluation = None
        if data.validation is not None:
            evaluation = self._split(data.validation, tokenizer, max_length, "eval",
                                     sources.get("validation", "the evaluation data"), notes)
        return Features(train, evaluation, notes)

    def _loss_note(self) -> str:
        d = self.cfg.dpo
        reference = "the starting model with its LoRA adapters disabled" if self.cfg.lora.enabled \
            else "a frozen copy of the starting model"
        once = ", its log-probs computed once before training" if d.precompute_ref_log_probs else ""
        weights = d.loss_weights or [1.0] * len(d.losses)
        loss = " + ".join(n if w == 1 else f"{w:g} x {n}" for n, w in zip(d.losses, weights))
        return f"TRL {loss} loss, beta {d.beta:g}; reference: {reference}{once}"

    def _split(self, rows: Any, tokenizer: Any, max_length: int, split: str, where: str, notes: list[str]) -> Any:
        limit = self.cfg.dpo.max_prompt_length
        features, truncated, dropped = featurize(rows, tokenizer, self.format, max_length, limit, f"tokenizing {split}")
        self.counts.update({f"{split}_pairs": len(features) + dropped, f"{split}_pairs_truncated": truncated,
                            f"{split}_pairs_dropped": dropped})
        if truncated:
            notes.append(f"{where}: {truncated} of {len(features) + dropped} pairs are longer than {max_length} tokens "
                         f"and were cut (prompt first, keeping its end); {dropped} of them were cut to the same "
                         "response and dropped. Raise --set train.max_length to keep them")
        if len(features) == 0:
            raise DataError(f"no pair of {where} is left within train.max_length {max_length} tokens; raise it")
        return features

    def model_kwargs(self) -> dict[str, Any]:
        return {}

    def check_model(self, model: Any) -> None:
        """Generation of the tuned model stops at eos, as its responses were trained to."""
        stop_at_eos(model, self.tokenizer)

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        """TRL's DPO trainer (under llmtune's Trainer behaviour) and its settings; TRL's own collator."""
        from llmtune.tasks.dpo_trainer import LlmtuneDPOTrainer

        d = self.cfg.dpo
        args = {"beta": d.beta, "loss_type": d.losses, "loss_weights": d.loss_weights, "label_smoothing": d.label_smoothing,
                "precompute_ref_log_probs": d.precompute_ref_log_probs, "max_length": None}  # pairs already fit
        return {"trainer_class": LlmtuneDPOTrainer, "trainer_args": args}

    def report(self, run_dir: Path) -> dict[str, Any]:
        """The layout and the truncation counts, for metrics.json."""
        return {"data_format": self.format, **self.counts}


def eval_features(pairs: Any) -> Any:
    """Each pair as two causal-LM rows (chosen, then rejected): prompt unlabelled, response labelled."""
    from datasets import Dataset

    rows: dict[str, list[Any]] = {"input_ids": [], "labels": [], "length": []}
    for p, c, r in zip(pairs["prompt_ids"], pairs["chosen_ids"], pairs["rejected_ids"]):
        for response in (c, r):
            rows["input_ids"].append(p + response)
            rows["labels"].append([IGNORE] * len(p) + response)
            rows["length"].append(len(p) + len(response))
    return Dataset.from_dict(rows)


def masking_examples(dataset: Any, tokenizer: Any, cfg: RunConfig, n: int,
                     where: str) -> tuple[str, list[tuple[list[int], list[int]]]]:
    """The first ``n`` pairs as training sees them (``data inspect --show-masking``): chosen row, then rejected row."""
    fmt = pair_format(dataset.column_names, cfg.data.format, where)
    rows = dataset.select(range(min(n, len(dataset))))
    batch = featurize_pairs(rows.to_dict(), list(range(len(rows))), tokenizer, fmt, cfg.train.max_length,
                            cfg.dpo.max_prompt_length, special_prefix(tokenizer))
    features = eval_features(batch)
    return fmt, list(zip(features["input_ids"], features["labels"]))


class DpoEval:
    """``llmtune eval --task dpo``: how often the model prefers the chosen response (no reference model)."""

    name = "dpo"
    auto_class = "AutoModelForCausalLM"
    columns = TASKS["dpo"].columns

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.notes: list[str] = []
        self.features: Any = None
        self.pairs = 0

    def check_tokenizer(self, tokenizer: Any) -> None:
        from llmtune.tasks.lm import check_tokenizer

        check_tokenizer(tokenizer, masked=False)

    def prepare(self, rows: Any, tokenizer: Any, max_length: int, where: str) -> None:
        """Check and tokenize the pairs as training does; two rows per pair, sorted longest first."""
        fmt = pair_format(rows.column_names, self.cfg.data.format, where)
        pairs, truncated, dropped = featurize(rows, tokenizer, fmt, max_length, self.cfg.dpo.max_prompt_length,
                                              "tokenizing")
        if len(pairs) == 0:
            raise DataError(f"no pair of {where} is left within train.max_length {max_length} tokens; raise it")
        self.pairs = len(pairs)
        if truncated:
            self.notes.append(f"{truncated} pairs cut to {max_length} tokens, {dropped} dropped (cut to the same response)")
        self.notes.append("dpo: summed log-probability of each response given its prompt; preference accuracy = "
                          "share of pairs whose chosen response is more likely (ties count as wrong)")
        features = eval_features(pairs)
        self.features, self.order = longest_first(features, features["length"])

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        from llmtune.tasks.lm import GenerationCollator
        from llmtune.tasks.scoring import causal_nll

        return {"collator": GenerationCollator(tokenizer.pad_token_id), "preprocess_logits": causal_nll}

    def finish(self, output: Any, out_dir: Path, model: Any, tokenizer: Any) -> tuple[dict[str, Any], list[Record]]:
        """Preference accuracy, mean chosen/rejected log-probabilities and margin; one record per pair."""
        rows = unsort(output.predictions.tolist(), self.order)
        logps = [-nll for nll, _ in rows]
        chosen, rejected = logps[0::2], logps[1::2]
        wins = [c > r for c, r in zip(chosen, rejected)]
        n = len(wins)
        metrics = {"eval_preference_accuracy": sum(wins) / n, "eval_logps_chosen": sum(chosen) / n,
                   "eval_logps_rejected": sum(rejected) / n, "eval_logps_margin": sum(chosen) / n - sum(rejected) / n,
                   "eval_pairs": n}
        records: list[Record] = [{"pair": i, "logp_chosen": c, "logp_rejected": r, "correct": w}
                                 for i, (c, r, w) in enumerate(zip(chosen, rejected, wins))]
        return metrics, records


def training_task(cfg: RunConfig) -> DpoTask:
    """The plug-in ``llmtune finetune --task dpo`` trains with (TRL must be installed)."""
    require_trl()
    return DpoTask(cfg)


def eval_task(cfg: RunConfig, config: Any) -> DpoEval:
    """The plug-in ``llmtune eval --task dpo`` scores with (no TRL needed)."""
    return DpoEval(cfg)
