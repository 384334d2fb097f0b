"""Generation fine-tuning of causal LMs: instruction / chat / completion SFT and continued pre-training.

Rows are rendered into prompt and response segments (``chat_formats``), each segment tokenized on
its own (the prompt exactly as it is tokenized at inference, after the tokenizer's own leading
special tokens such as Llama's BOS), and labelled: response tokens keep their ids, prompt tokens
get -100 unless ``train.train_on_prompt``. Every response ends with the eos token so the model
learns to stop. ``text`` data is packed into blocks like pre-training (``lm.pack_blocks``).

Examples longer than ``max_length`` are cut on the right. One whose response is cut away entirely
would have no label at all (a zero or NaN loss for its batch), so it is dropped; truncated and
dropped examples are counted in the run's notes and metrics.json.

Packing (``train.packing``) concatenates short examples into rows of up to ``max_length`` tokens
with ``position_ids`` restarting at 0 for each example and no attention mask. transformers turns
such position resets into a block-diagonal causal mask (``masking_utils.find_packed_sequence_indices``
for the sdpa/eager kernels, variable-length kernels for flash-attention), so examples never attend
to each other and each is trained exactly as it would be alone, minus the padding. Whether a model
honours the resets depends on its attention code, so ``check_model`` verifies it with one forward
pass (packed logits must equal the logits of the example alone) and refuses packing otherwise:
letting examples see each other silently trains every answer on unrelated context, which costs
more than padding does. Evaluation rows are never packed, so eval loss compares across settings.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

from llmtune.config.schema import RunConfig
from llmtune.dist import log
from llmtune.errors import ConfigError, DataError
from llmtune.modeling import IGNORE
from llmtune.tasks.base import MAP_BATCH_SIZE, Features, Record, longest_first, unsort
from llmtune.tasks.chat_formats import detect_format, prompt_text, render_row
from llmtune.tasks.lm import GenerationCollator
from llmtune.tasks.registry import TASKS
from llmtune.tasks.scoring import causal_nll, nll_totals

SAMPLE_PROMPTS = 3
SAMPLE_NEW_TOKENS = 64


# --------------------------------------------------------------------------------------------------
# Rows -> token ids and labels
# --------------------------------------------------------------------------------------------------


def special_prefix(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts before a text by itself (Llama's BOS; none for GPT-2)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def encode_row(
    pieces: list[list[int]], trained: list[bool], prefix: list[int], eos_id: int, train_on_prompt: bool
) -> tuple[list[int], list[int]]:
    """Token ids and labels of one rendered row.

    Args:
        pieces: Token ids of each segment, tokenized on its own without special tokens.
        trained: Whether each segment is a response.
        prefix: ``special_prefix`` ids, put first and never trained.
        eos_id: Appended to every response that does not already end with it.
        train_on_prompt: Label prompt segments too.

    Returns:
        ``(input_ids, labels)``; the first label is always -100 (nothing predicts the first token).
    """
    ids, labels = list(prefix), [IGNORE] * len(prefix)
    for piece, is_response in zip(pieces, trained):
        piece = list(piece)
        if is_response and (not piece or piece[-1] != eos_id):
            piece.append(eos_id)
        ids += piece
        labels += piece if (is_response or train_on_prompt) else [IGNORE] * len(piece)
    if labels:
        labels[0] = IGNORE
    return ids, labels


def featurize_batch(
    batch: dict[str, list[Any]], indices: list[int], tokenizer: Any, fmt: str, max_length: int,
    train_on_prompt: bool, prefix: list[int],
) -> dict[str, list[Any]]:
    """Features of a batch of SFT rows (for ``Dataset.map(batched=True, with_indices=True)``).

    Returns:
        ``input_ids``, ``labels`` (cut at ``max_length``), ``length``, ``truncated`` (bool) and
        ``trained`` (labelled tokens left after the cut) per row.
    """
    rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    segments = [render_row(fmt, row, tokenizer, index + 1) for row, index in zip(rows, indices)]
    texts = [text for row in segments for text, _ in row]
    flat = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "length": [], "truncated": [], "trained": []}
    at = 0
    for row in segments:
        ids, labels = encode_row(flat[at : at + len(row)], [t for _, t in row], prefix, tokenizer.eos_token_id,
                                 train_on_prompt)
        at += len(row)
        out["truncated"].append(len(ids) > max_length)
        ids, labels = ids[:max_length], labels[:max_length]
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["length"].append(len(ids))
        out["trained"].append(sum(label != IGNORE for label in labels))
    return out


def pack_examples(batch: dict[str, list[Any]], max_length: int) -> dict[str, list[Any]]:
    """Concatenate consecutive examples into rows of at most ``max_length`` tokens (``Dataset.map``).

    Each example keeps its own ``position_ids`` (0, 1, ...), which is what keeps packed examples
    apart (see the module docstring). Every example's first label is already -100, so no example
    is trained to predict its first token from the previous one.
    """
    out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "position_ids": [], "length": []}
    row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}

    def flush() -> None:
        if row["input_ids"]:
            for key in row:
                out[key].append(row[key])
            out["length"].append(len(row["input_ids"]))

    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        if len(row["input_ids"]) + len(ids) > max_length:
            flush()
            row = {"input_ids": [], "labels": [], "position_ids": []}
        row["input_ids"] += ids
        row["labels"] += labels
        row["position_ids"] += range(len(ids))
    flush()
    return out


def packing_isolates(model: Any, collator: GenerationCollator) -> bool:
    """Whether ``model`` keeps packed examples apart: logits of a packed pair equal those of each alone."""
    import torch

    vocab = model.get_input_embeddings().weight.shape[0]
    first, second = [i % vocab for i in range(3, 10)], [i % vocab for i in range(11, 16)]
    packed = collator([{"input_ids": first + second, "position_ids": [*range(7), *range(5)]}])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            together = model(**{k: (v.to(model.device) if hasattr(v, "to") else v) for k, v in packed.items()
                                if k != "labels"}).logits[0, len(first):].float()
            alone = model(input_ids=torch.tensor([second], device=model.device)).logits[0].float()
    except (TypeError, ValueError, RuntimeError):
        return False  # an architecture whose forward rejects position_ids / this layout
    finally:
        model.train(was_training)
    return bool(torch.allclose(together, alone, atol=1e-3 * max(1.0, alone.abs().max().item()), rtol=1e-3))


# --------------------------------------------------------------------------------------------------
# The plug-in
# --------------------------------------------------------------------------------------------------


def _has_labels(trained: list[int]) -> list[bool]:
    return [n > 0 for n in trained]


class GenerationTask:
    """Causal-LM fine-tuning on chat, alpaca, prompt/completion or plain text data.

    Call ``prepare`` first: it finds the format and tokenizes, which everything after it needs.
    """

    name = "generation"
    auto_class = "AutoModelForCausalLM"
    columns = TASKS["generation"].columns

    def __init__(self, fmt: Optional[str] = None, train_on_prompt: bool = False, packing: bool = False) -> None:
        self.requested = fmt
        self.format: Optional[str] = None
        self.train_on_prompt = train_on_prompt
        self.packing = packing
        self.tokenizer: Any = None
        self.counts: dict[str, int] = {}
        self.sample_prompts: list[list[int]] = []
        self.units: Optional[dict[str, float]] = None  # text format: characters per token of the eval blocks

    def check_tokenizer(self, tokenizer: Any) -> None:
        """A causal LM needs an eos token: responses end with it, and blocks of text are separated by it."""
        from llmtune.tasks.lm import check_tokenizer

        check_tokenizer(tokenizer, masked=False)

    def prepare(self, data: Any, tokenizer: Any, max_length: int) -> Features:
        """Detect the format, render and tokenize both splits, drop examples with nothing left to train.

        Raises:
            DataError: No recognisable format, a bad row (see ``chat_formats``), or no example left.
        """
        sources = getattr(data, "sources", {})
        where = sources.get("train", "the training data")
        self.format = detect_format(data.train.column_names, self.requested, where)
        self.tokenizer = tokenizer
        notes = [f"data format: {self.format}" + ("" if self.requested else " (detected from the columns; "
                                                                           "--format to choose)")]
        if self.format in ("chat", "sharegpt"):
            from llmtune.chat_template import ensure_chat_template

            if ensure_chat_template(tokenizer):
                notes.append("the tokenizer has no chat template: using llmtune's builtin one (<|user|>/<|assistant|> "
                             "markers), saved with the model")
        if self.format == "text":
            return self._prepare_text(data, tokenizer, max_length, notes)
        if data.validation is not None:
            self.sample_prompts = self._prompts(data.validation.select(range(min(SAMPLE_PROMPTS, len(data.validation)))))
        train = self._featurize(data.train, max_length, "train", where, notes)
        evaluation = None
        if data.validation is not None:
            evaluation = self._featurize(data.validation, max_length, "eval", sources.get("validation", "the evaluation "
                                                                                            "data"), notes)
        if self.packing:
            rows = len(train)
            train = train.map(pack_examples, batched=True, batch_size=MAP_BATCH_SIZE, remove_columns=train.column_names,
                              fn_kwargs={"max_length": max_length}, desc="packing")
            notes.append(f"packing: {rows} training examples in {len(train)} rows of up to {max_length} tokens")
        what = "prompts and responses" if self.train_on_prompt else "responses only (--train-on-prompt for prompts too)"
        notes.append(f"loss on {what}; every response ends with {tokenizer.eos_token!r}")
        return Features(train, evaluation, notes)

    def _prompts(self, rows: Any) -> list[list[int]]:
        prefix = special_prefix(self.tokenizer)
        texts = [prompt_text(self.format, row, self.tokenizer, i + 1) for i, row in enumerate(rows)]
        return [prefix + list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _featurize(self, rows: Any, max_length: int, split: str, where: str, notes: list[str]) -> Any:
        """Tokenize one split (cached by ``Dataset.map``), count and drop examples left without labels."""
        features = rows.map(
            featurize_batch, batched=True, with_indices=True, batch_size=MAP_BATCH_SIZE,
            remove_columns=rows.column_names, desc=f"tokenizing {split}",
            fn_kwargs={"tokenizer": self.tokenizer, "fmt": self.format, "max_length": max_length,
                       "train_on_prompt": self.train_on_prompt, "prefix": special_prefix(self.tokenizer)},
        )
        kept = features.filter(_has_labels, input_columns="trained", batched=True, batch_size=MAP_BATCH_SIZE,
                               desc="dropping fully truncated")
        truncated, dropped = sum(features["truncated"]), len(features) - len(kept)
        self.counts.update({f"{split}_examples": len(features), f"{split}_examples_truncated": truncated,
                            f"{split}_examples_dropped": dropped})
        if truncated:
            notes.append(f"{where}: {truncated} of {len(features)} examples are longer than {max_length} tokens and were "
                         f"cut; {dropped} of them lost their whole response and were dropped. Raise --set "
                         "train.max_length to keep them")
        if len(kept) == 0:
            raise DataError(f"no example of {where} has a response within train.max_length {max_length} tokens (all "
                            f"{len(features)} prompts fill it); raise --set train.max_length")
        return kept.remove_columns(["truncated", "trained"])

    def _prepare_text(self, data: Any, tokenizer: Any, max_length: int, notes: list[str]) -> Features:
        """Plain text: packed blocks as in pre-training (``packing`` is implied)."""
        from llmtune.engine.samples import sample_prompt
        from llmtune.tasks.lm import LanguageModelTask, text_units_per_token

        task = LanguageModelTask(masked=False)
        train = task.preprocess(data.train, tokenizer, max_length, desc="packing train")
        if len(train) == 0:
            raise DataError(f"the training text is too short for one block of {max_length} tokens; add text or lower "
                            "--set train.max_length")
        evaluation = None
        if data.validation is not None:
            evaluation = task.preprocess(data.validation, tokenizer, max_length, desc="packing eval")
            if len(evaluation) == 0:
                notes.append(f"the evaluation text is shorter than one block of {max_length} tokens: no evaluation")
                evaluation = None
        if evaluation is not None:
            self.units = text_units_per_token(evaluation, max_length)
            self.sample_prompts = [sample_prompt(evaluation[0]["input_ids"], tokenizer)]
        notes.append(f"text packed into {len(train)} training blocks of {max_length} tokens (loss on every token)")
        train = train.add_column("length", [max_length] * len(train))  # tokens per row, for the throughput figures
        return Features(train, evaluation, notes)

    def model_kwargs(self) -> dict[str, Any]:
        return {}

    def check_model(self, model: Any) -> None:
        """Make ``generate`` stop at the eos responses end with; refuse packing the model cannot isolate.

        Raises:
            ConfigError: ``packing`` on a model whose attention lets packed examples see each other.
        """
        eos = self.tokenizer.eos_token_id
        config = getattr(model, "generation_config", None)
        stops = config.eos_token_id if config is not None else None
        stops = [] if stops is None else ([stops] if isinstance(stops, int) else list(stops))
        if config is not None and eos not in stops:
            config.eos_token_id = [*stops, eos] if stops else eos
            log(f"generation stops at the tokenizer's eos {self.tokenizer.eos_token!r} too (added to generation_config)")
        if self.packing and self.format != "text" and not packing_isolates(model, self.collator(self.tokenizer)):
            raise ConfigError(
                f"train.packing: {type(model).__name__} lets packed examples attend to each other (its attention "
                "ignores position_ids restarts), which would train every answer on unrelated examples; drop --packing"
            )

    def collator(self, tokenizer: Any) -> GenerationCollator:
        return GenerationCollator(tokenizer.pad_token_id, packed=self.packing and self.format != "text")

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        """Collator, sample generations after each evaluation, perplexity from the eval loss."""
        from llmtune.engine.samples import SampleCallback

        callbacks = [SampleCallback(tokenizer, self.sample_prompts, new_tokens=SAMPLE_NEW_TOKENS)] \
            if self.sample_prompts else []
        return {"collator": self.collator(tokenizer), "callbacks": callbacks, "derive_metrics": self.derive_metrics}

    def derive_metrics(self, metrics: dict[str, float], prefix: str) -> dict[str, float]:
        """Perplexity and bits per token (text: per character and byte too) from an evaluation's loss."""
        from llmtune.tasks.lm import lm_eval_metrics

        units = self.units or {"chars_per_token": math.nan, "bytes_per_token": math.nan}
        derived = lm_eval_metrics(metrics[f"{prefix}_loss"], units)
        return {f"{prefix}_{k}": v for k, v in derived.items() if not math.isnan(v)}

    def report(self, run_dir: Path) -> dict[str, Any]:
        """The format and the truncation counts, for metrics.json."""
        return {"data_format": self.format, **self.counts}


def masking_examples(dataset: Any, tokenizer: Any, fmt: Optional[str], max_length: int, train_on_prompt: bool,
                     n: int, where: str = "the data") -> tuple[str, list[tuple[list[int], list[int]]]]:
    """The first ``n`` rows as training sees them, for ``llmtune data inspect --show-masking``.

    Returns:
        The format and ``(input_ids, labels)`` per row (text rows: every token trained, eos-terminated).
    """
    fmt = detect_format(dataset.column_names, fmt, where)
    rows = dataset.select(range(min(n, len(dataset))))
    if fmt in ("chat", "sharegpt"):
        from llmtune.chat_template import ensure_chat_template

        ensure_chat_template(tokenizer)
    if fmt == "text":
        ids = [list(i) + [tokenizer.eos_token_id] for i in tokenizer(rows["text"], add_special_tokens=False)["input_ids"]]
        return fmt, [(i[:max_length], ([IGNORE] + i[1:])[:max_length]) for i in ids]
    batch = featurize_batch(rows.to_dict(), list(range(len(rows))), tokenizer, fmt, max_length, train_on_prompt,
                            special_prefix(tokenizer))
    return fmt, list(zip(batch["input_ids"], batch["labels"]))


def reference_text(fmt: str, row: dict[str, Any]) -> str:
    """The response a row expects: the completion, the alpaca output or the last assistant message."""
    if fmt == "chat":
        return str(row["messages"][-1].get("content") or "").strip()
    if fmt == "sharegpt":
        return str(row["conversations"][-1].get("value") or "").strip()
    return str(row["output" if fmt == "alpaca" else "completion"] or "").strip()


class GenerationEval:
    """Response perplexity (and, with ``--generate``, exact match / ROUGE / BLEU of greedy responses).

    Rows are rendered and tokenized by the generation task's own ``featurize_batch`` (prompt
    tokens unlabelled, each response closed by eos), so the loss is the one fine-tuning reports,
    summed exactly over response tokens instead of averaged over batches.
    """

    name = "generation"
    auto_class = "AutoModelForCausalLM"
    columns = TASKS["generation"].columns

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.notes: list[str] = []
        self.features: Any = None
        self.prompts: list[str] = []
        self.references: list[str] = []

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Responses end with eos: the tokenizer needs one."""
        from llmtune.tasks.lm import check_tokenizer

        check_tokenizer(tokenizer, masked=False)

    def prepare(self, rows: Any, tokenizer: Any, max_length: int, where: str) -> None:
        """Render each row (prompt/completion, alpaca or chat), label its response tokens, sort by length.

        Raises:
            DataError: Plain-text rows (use --task lm), rows of no known format, or a bad row.
        """
        fmt = detect_format(rows.column_names, getattr(self.cfg.data, "format", None), where)
        if fmt == "text":
            raise DataError(f"{where} holds plain text, which has no responses to score; evaluate it with --task lm")
        if fmt in ("chat", "sharegpt"):
            from llmtune.chat_template import ensure_chat_template

            ensure_chat_template(tokenizer)
        kwargs = {"tokenizer": tokenizer, "fmt": fmt, "max_length": max_length, "train_on_prompt": False,
                  "prefix": special_prefix(tokenizer)}
        features = rows.map(featurize_batch, batched=True, with_indices=True, remove_columns=rows.column_names,
                            desc="tokenizing", fn_kwargs=kwargs)
        self.prompts = [prompt_text(fmt, row, tokenizer, i + 1) for i, row in enumerate(rows)]
        self.references = [reference_text(fmt, row) for row in rows]
        truncated = sum(features["truncated"])
        if truncated:
            self.notes.append(f"{truncated} of {len(features)} rows are longer than {max_length} tokens and were cut "
                              "(their response only partly scored); raise --set train.max_length to keep them whole")
        self.notes.append(f"generation ({fmt} rows): perplexity of the response tokens (each closed by eos) given "
                          "the prompt")
        features = features.remove_columns(["truncated", "trained"])
        self.features, self.order = longest_first(features, features["length"])

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        """The generation task's collator and per-row NLL sums."""
        return {"collator": GenerationCollator(tokenizer.pad_token_id), "preprocess_logits": causal_nll}

    def finish(self, output: Any, out_dir: Path, model: Any, tokenizer: Any) -> tuple[dict[str, Any], list[Record]]:
        """Response loss/perplexity; with ``eval.generate`` also greedy responses and their scores."""
        from llmtune.metrics.core import lm_metrics

        total, tokens = nll_totals(output.predictions)
        if tokens == 0:
            raise DataError("no response token was scored (every response was cut); raise --set train.max_length")
        scores = lm_metrics(total, tokens)
        metrics: dict[str, Any] = {"eval_response_tokens": tokens, **{f"eval_{k}": v for k, v in scores.items()}}
        rows = unsort(output.predictions.tolist(), self.order)
        records = [{"input": p, "reference": r, "prediction": None, "correct": None, "loss": nll / n if n else None}
                   for p, r, (nll, n) in zip(self.prompts, self.references, rows)]
        if self.cfg.eval.generate:
            metrics.update(self._generate(model, tokenizer, records))
        return metrics, records

    def _generate(self, model: Any, tokenizer: Any, records: list[Record]) -> dict[str, float]:
        from llmtune.decoding import generate_records
        from llmtune.metrics.overlap import bleu, exact_match, rouge_scores

        g = self.cfg.generate.model_copy(update={"temperature": 0.0, "num_return_sequences": 1})
        batch = self.cfg.train.eval_batch_size or self.cfg.train.batch_size
        generated, _ = generate_records(model, tokenizer, self.prompts, g, batch)
        texts = [r["completion"].strip() for r in generated]
        for record, text in zip(records, texts):
            record["prediction"] = text
            record["correct"] = exact_match([text], [record["reference"]]) == 1.0
        self.notes.append(f"--generate: greedy responses of up to {g.max_new_tokens} new tokens scored against the "
                          "reference (exact match ignoring spacing, ROUGE-1/2/L F1, corpus BLEU; all 0-1)")
        rouge = rouge_scores(texts, self.references)
        return {"eval_exact_match": exact_match(texts, self.references), **{f"eval_{k}": v for k, v in rouge.items()},
                "eval_bleu": bleu(texts, self.references)["bleu"]}


def training_task(cfg: RunConfig) -> GenerationTask:
    """The plug-in ``llmtune finetune --task generation`` trains with."""
    return GenerationTask(cfg.data.format, cfg.train.train_on_prompt, cfg.train.packing)


def eval_task(cfg: RunConfig, config: Any) -> GenerationEval:
    """The plug-in ``llmtune eval --task generation`` scores with."""
    return GenerationEval(cfg)
