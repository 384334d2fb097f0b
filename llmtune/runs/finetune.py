"""``llmtune finetune``: adapt a pretrained model to a task -> Trainer -> run dir.

The spine is the same for every task and lives here:

    data -> model config -> tokenizer -> task.prepare (labels, features: every data check)
         -> model with the task's head (+ LoRA) -> Trainer -> final evaluation -> task.report -> save

Everything that differs between tasks sits behind ``FinetuneTask`` (classification and generation
implement it directly; QA plugs in with a small adapter, see ``make_task``). Bad input fails
before the model's weights load, and a fresh run dir that failed that way is removed so the
corrected command can simply be rerun.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol

from llmtune.config.schema import RunConfig
from llmtune.errors import ConfigError, LlmtuneError, ModelError, NotAvailableError
from llmtune.runs.common import PROGRESS_ROWS, RunResult, datasets_progress, finish_run, start_run
from llmtune.dist import is_main_process, log, main_process_first
from llmtune.tasks.base import ColumnSpec



class FinetuneTask(Protocol):
    """What the runner needs from a task (duck-typed; see ``ClassificationTask``)."""

    name: str
    columns: ColumnSpec
    auto_class: str  # e.g. "AutoModelForSequenceClassification"

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Raise ModelError for a tokenizer the task cannot use (e.g. QA needs offsets)."""

    def prepare(self, data: Any, tokenizer: Any, max_length: int) -> Any:
        """Validate and featurize ``TaskData``; return an object with ``train``, ``eval`` and ``notes``."""

    def model_kwargs(self) -> dict[str, Any]:
        """Extra ``from_pretrained`` arguments (head size, label names...); valid after ``prepare``."""

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        """``collator``, ``compute_metrics``, ``preprocess_logits`` and ``compute_loss`` (each may be None)."""

    def report(self, run_dir: Path) -> dict[str, Any]:
        """Extra final metrics for metrics.json (and any plots), after the final evaluation."""


@dataclass
class _Prepared:
    """Everything training needs, checked before the first step."""

    cfg: RunConfig
    task: Any
    tokenizer: Any
    model: Any
    features: Any
    precision: str
    checkpoint: Optional[str]
    new_parameters: frozenset[str] = frozenset()


def make_task(cfg: RunConfig) -> FinetuneTask:
    """The task plug-in for ``cfg.task``.

    Raises:
        NotAvailableError: A task whose fine-tuning has not landed yet.
    """
    if cfg.task == "classification":
        from llmtune.tasks.classification import ClassificationTask

        # train.class_weights is read once the schema has it (requested); unweighted until then.
        return ClassificationTask(cfg.train.class_weights)
    if cfg.task == "qa":
        return QAAdapter(cfg)
    if cfg.task == "generation":
        from llmtune.tasks.generation import GenerationTask

        return GenerationTask(cfg.data.format, cfg.train.train_on_prompt, cfg.train.packing)
    raise NotAvailableError(
        f"`llmtune finetune --task {cfg.task}` is not implemented yet (tracked in issue #5); "
        "--print-config already shows the resolved config"
    )


@dataclass
class _Features:
    train: Any
    eval: Optional[Any]
    notes: list[str]


class QAAdapter:
    """``llmtune.tasks.qa.QATask`` behind ``FinetuneTask``: windows, n-best answers, EM/F1, predictions.json.

    The QA task is built in ``prepare``, once the model's usable ``max_length`` is known, because
    its window stride must fit inside it.
    """

    name = "qa"
    auto_class = "AutoModelForQuestionAnswering"

    def __init__(self, cfg: RunConfig) -> None:
        from llmtune.tasks.qa import QATask, check_tokenizer

        self.cfg = cfg
        self.columns = QATask.columns
        self.check_tokenizer = check_tokenizer
        self.task: Any = None
        self.eval_examples: Any = None
        self.eval_features: Any = None

    def prepare(self, data: Any, tokenizer: Any, max_length: int) -> _Features:
        from llmtune.tasks.qa import QATask

        # train.doc_stride when set, else SQuAD's ratio (stride 128 in 384-token windows).
        stride = self.cfg.train.doc_stride or min(128, max_length // 3)
        self.task = QATask(max_length, stride, allow_no_answer=self.cfg.data.allow_no_answer)
        train, counts = self.task.validate(data.train)
        notes = [f"skipped {counts['misaligned']} training rows whose answer is not at answer_start"] \
            if counts["misaligned"] else []
        features = self.task.preprocess_train(train, tokenizer, desc="windowing train")
        if data.validation is not None:
            self.eval_examples, self.eval_features = self.task.prepare_eval(data.validation, tokenizer,
                                                                            desc="windowing eval")
        notes.append(f"{len(train)} questions -> {len(features)} training windows of up to {max_length} tokens "
                     f"(stride {stride})")
        return _Features(features, self.eval_features, notes)

    def model_kwargs(self) -> dict[str, Any]:
        return {}

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        metrics = None
        if self.eval_examples is not None:
            metrics = self.task.compute_metrics_fn(self.eval_examples, self.eval_features)
        return {"collator": self.task.collator(tokenizer), "compute_metrics": metrics}

    def report(self, run_dir: Path) -> dict[str, Any]:
        """The last evaluation's answers, id -> text, in ``predictions.json``."""
        import json

        if self.task is not None and self.task.last_predictions:
            text = json.dumps(self.task.last_predictions, indent=1, ensure_ascii=False)
            (run_dir / "predictions.json").write_text(text, encoding="utf-8")
        return {}


def run(cfg: RunConfig) -> RunResult:
    """Fine-tune ``cfg.model.name_or_path`` on ``cfg.task`` and return where everything went."""
    from llmtune.engine.trainer import resume_checkpoint
    from llmtune.modeling import resolve_model_path

    started = time.monotonic()
    task = make_task(cfg)
    if not cfg.model.name_or_path:
        raise ConfigError("finetune starts from a pretrained model; pass --model HUB_ID, a model folder or a run dir")
    model_path = resolve_model_path(cfg.model.name_or_path)
    default_dir = Path("runs") / f"finetune-{task.name}-{Path(model_path.rstrip('/')).name}"
    output_dir = Path(cfg.train.output_dir or default_dir).expanduser()
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"output_dir": str(output_dir)})})
    fresh = cfg.train.overwrite or not output_dir.is_dir() or not any(output_dir.iterdir())
    run_dir = start_run(cfg, default_name=default_dir.name)
    try:
        prepared = _prepare(cfg, task, model_path, resume_checkpoint(cfg, run_dir))
    except LlmtuneError:
        if fresh and is_main_process():
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing worth keeping; a rerun must not need --overwrite
        raise
    return _train(prepared, run_dir, started)


def _prepare(cfg: RunConfig, task: Any, model_path: str, checkpoint: Optional[str]) -> _Prepared:
    from llmtune.data.loading import load_task_data
    from llmtune.engine.reliability import check_disk_space
    from llmtune.modeling import count_parameters, load_pretrained, resolve_precision

    precision = resolve_precision(cfg.train.precision)
    data = load_task_data(cfg.data, task.columns, seed=cfg.train.seed)
    for note in data.notes:
        log(note)
    config = load_pretrained(model_path, "AutoConfig", trust_remote_code=cfg.model.trust_remote_code)
    tokenizer = model_tokenizer(cfg, model_path)
    task.check_tokenizer(tokenizer)
    max_length = capped_max_length(cfg.train.max_length, config, tokenizer)
    with main_process_first(), datasets_progress(len(data.train) >= PROGRESS_ROWS):
        features = task.prepare(data, tokenizer, max_length)  # rank 0 writes the datasets cache, the others load it
    for note in features.notes:
        log(note)
    check_head_size(cfg, config, task.model_kwargs())
    model, new_parameters = _model(cfg, task, model_path, tokenizer, config)
    _check_vocab(cfg, model, tokenizer)
    if is_main_process():
        check_disk_space(Path(cfg.train.output_dir), *count_parameters(model))
    if hasattr(task, "check_model"):  # optional hook: checks that need the loaded model
        task.check_model(model)
    return _Prepared(cfg, task, tokenizer, model, features, precision, checkpoint, new_parameters)


def _check_vocab(cfg: RunConfig, model: Any, tokenizer: Any) -> None:
    """Refuse a tokenizer whose token ids run past the model's embedding matrix (it would fail mid-training)."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ModelError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary (embedding matrix) "
                         f"has {rows}; pass the tokenizer the model was trained with"
                         + (" (drop model.tokenizer)" if cfg.model.tokenizer else ""))


def model_tokenizer(cfg: RunConfig, model_path: str) -> Any:
    """The model's own tokenizer (or ``model.tokenizer``), with a padding token for batching."""
    from llmtune.tokenizer import TOKENIZER_FILES, load_tokenizer

    source = cfg.model.tokenizer or model_path
    folder = Path(source).expanduser()
    if not cfg.model.tokenizer and folder.is_dir() and not any((folder / n).is_file() for n in TOKENIZER_FILES):
        raise ModelError(
            f"model folder {source} has no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}...); pass the one "
            "the model was trained with: --set model.tokenizer=FOLDER_OR_HUB_ID"
        )
    tok = load_tokenizer(source, trust_remote_code=cfg.model.trust_remote_code)
    if tok.pad_token is None:
        # Decoder-only models (GPT-2, Llama) ship without one; the attention mask hides the padding,
        # and the sequence-classification heads find the last real token through pad_token_id.
        if tok.eos_token is None:
            raise ModelError(f"the tokenizer of {source} has neither a padding nor an end-of-text token; "
                             "pass a tokenizer that has one with --set model.tokenizer=...")
        tok.pad_token = tok.eos_token
        log(f"tokenizer has no padding token: padding with its end-of-text token {tok.eos_token!r}")
    return tok


def capped_max_length(requested: int, config: Any, tokenizer: Any) -> int:
    """``train.max_length`` capped at what the model can take (its positions, the tokenizer's limit)."""
    from llmtune.decoding import context_length

    limit = context_length(config, tokenizer) or requested
    if requested > limit:
        log(f"train.max_length {requested} is more than the model's {limit} positions: truncating at {limit}")
    return min(requested, limit)


def check_head_size(cfg: RunConfig, config: Any, kwargs: dict[str, Any]) -> None:
    """Refuse, before loading weights, a trained classification head of the wrong size."""
    has_head = any(str(a).endswith("ForSequenceClassification") for a in (getattr(config, "architectures", None) or []))
    wanted = kwargs.get("num_labels")
    if has_head and wanted and config.num_labels != wanted and not cfg.model.ignore_mismatched_sizes:
        names = ", ".join(str(v) for v in list(config.id2label.values())[:5])
        raise ModelError(
            f"{cfg.model.name_or_path} already has a classification head for {config.num_labels} labels ({names}) "
            f"but the data has {wanted} classes; pass --set model.ignore_mismatched_sizes=true to replace the head "
            "with a new one trained from scratch"
        )


# Above this size the small-model default learning rate (recipes/classification/default.yaml) is risky.
LARGE_MODEL_PARAMS = 60_000_000


def _model(cfg: RunConfig, task: Any, model_path: str, tokenizer: Any, config: Any) -> tuple[Any, frozenset[str]]:
    """The pretrained model with the task's head, and the names of the weights it had to create."""
    import torch

    from llmtune.modeling import count_parameters, dropout_fields, format_params, load_pretrained

    kwargs = {**dropout_fields(config, cfg.model.dropout), **dict(cfg.model.config), **task.model_kwargs()}
    if cfg.model.ignore_mismatched_sizes:
        kwargs["ignore_mismatched_sizes"] = True
    torch.manual_seed(cfg.train.seed)  # the new head's initialisation
    try:
        with quiet_transformers():
            model, info = load_pretrained(model_path, task.auto_class, trust_remote_code=cfg.model.trust_remote_code,
                                          allow_pickle=cfg.model.allow_pickle, output_loading_info=True, **kwargs)
    except RuntimeError as exc:
        if "mismatch" not in str(exc):
            raise
        raise ModelError(f"{cfg.model.name_or_path} has weights whose shape does not fit this task (e.g. a head "
                         "for another number of labels); pass --set model.ignore_mismatched_sizes=true to "
                         "re-initialise them") from exc
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    total, _ = count_parameters(model)
    log(f"model: {cfg.model.name_or_path} as {type(model).__name__}, {format_params(total)} parameters")
    if total > LARGE_MODEL_PARAMS and cfg.train.lr > 1e-4:
        log(f"warning: lr {cfg.train.lr:g} is high for a {format_params(total)}-parameter model (the default suits "
            "models up to ~50M); base-size models usually fine-tune at 2e-5 to 5e-5: pass --lr or a model recipe")
    new = sorted({key.rsplit(".", 1)[0] for key in info.get("missing_keys", ())})
    if new:
        faster = "" if cfg.lora.enabled or cfg.train.head_lr_multiplier == 1 else f", at {cfg.train.head_lr_multiplier:g}x the lr"
        log(f"new weights (trained from scratch{faster}): {', '.join(new)}")
    # transformers lists mismatched keys as (name, checkpoint shape, model shape) tuples.
    mismatched = [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())]
    resized = sorted({str(key).rsplit(".", 1)[0] for key in mismatched})
    if resized:
        log(f"re-initialised for a new shape: {', '.join(resized)}")
    if cfg.train.freeze_embeddings and not cfg.lora.enabled:
        freeze_input_embeddings(model)
    if cfg.train.freeze_layers and not cfg.lora.enabled:
        freeze_lower_layers(model, cfg.train.freeze_layers)
    if cfg.lora.enabled:
        return apply_lora(cfg, model, new, task.auto_class), frozenset()
    return model, frozenset(str(k) for k in info.get("missing_keys", ()))


def freeze_input_embeddings(model: Any) -> None:
    """Keep the token embedding matrix fixed: no gradient, optimizer state or clipping over the vocabulary."""
    from llmtune.modeling import format_params

    weight = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    if output is not None and output.weight is weight:
        log("train.freeze_embeddings: skipped, the input embeddings are tied to the output layer (LM head), "
            "which must train")
        return
    weight.requires_grad_(False)
    log(f"frozen: input embeddings ({format_params(weight.numel())} parameters)")


def freeze_lower_layers(model: Any, n_layers: int) -> int:
    """Fix every weight below transformer block ``n_layers`` (embeddings included): no backward through them.

    Blocks are the model's longest ``ModuleList``; "below" is registration order, which puts the
    embeddings first in every transformers model. Returns how many parameters were frozen.
    """
    import torch

    from llmtune.modeling import format_params

    blocks = max((m for m in model.modules() if isinstance(m, torch.nn.ModuleList)), key=len, default=[])
    if n_layers >= len(blocks):
        raise ConfigError(f"train.freeze_layers={n_layers} would freeze all {len(blocks)} transformer blocks; "
                          f"pass a number below {len(blocks)}")
    first_trained = {id(p) for p in blocks[n_layers].parameters()}
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is model.get_input_embeddings().weight
    frozen = 0
    for param in model.parameters():
        if id(param) in first_trained:
            break
        if not (tied and param is output.weight):
            param.requires_grad_(False)
            frozen += param.numel()
    log(f"frozen: embeddings and the lowest {n_layers} of {len(blocks)} blocks ({format_params(frozen)} parameters)")
    return frozen


class _DropLoadReport(logging.Filter):
    """Drop transformers' per-key load table (the runner logs new and re-initialised weights itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' load table and progress bars inside the block (restored after)."""
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger("transformers.modeling_utils")
    drop, bars = _DropLoadReport(), hf_logging.is_progress_bar_enabled()
    logger.addFilter(drop)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.removeFilter(drop)
        if bars:
            hf_logging.enable_progress_bar()


_HEAD_NAMES = ("classifier", "score", "pre_classifier", "qa_outputs")


def lora_targets(model: Any, exclude: list[str]) -> list[str]:
    """Full names of every linear layer outside the task head and the newly initialised modules.

    Adapting every linear layer ("all-linear", as QLoRA does) works across architectures without a
    per-model name table: BERT's query/key/value/dense, GPT-2's c_attn/c_proj/c_fc, Llama's q_proj...
    """
    import torch
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    def excluded(name: str) -> bool:
        return any(name == e or name.startswith(e + ".") for e in exclude)

    return [name for name, module in model.named_modules()
            if isinstance(module, (torch.nn.Linear, Conv1D)) and not excluded(name)]


_PEFT_TASK_TYPES = {"AutoModelForSequenceClassification": "SEQ_CLS", "AutoModelForQuestionAnswering": "QUESTION_ANS",
                    "AutoModelForCausalLM": "CAUSAL_LM"}


def apply_lora(cfg: RunConfig, model: Any, new_modules: list[str], auto_class: str) -> Any:
    """Wrap ``model`` in LoRA adapters; the head and newly initialised modules train in full."""
    from peft import LoraConfig, TaskType, get_peft_model

    from llmtune.modeling import count_parameters, format_params

    heads = [name for name, _ in model.named_children() if name in _HEAD_NAMES]
    full = sorted(set(heads) | set(new_modules))
    output = model.get_output_embeddings()  # an LM head (often tied to the input embeddings) is not adapted
    head = [n for n, m in model.named_modules() if output is not None and m is output]
    targets = cfg.lora.target_modules or lora_targets(model, [*full, *head])
    if not targets:
        raise ModelError("no linear layers found for LoRA; name them with --set lora.target_modules=[...]")
    # GPT-2's Conv1D stores its weight transposed; peft must be told (it warns and guesses otherwise).
    transposed = any(type(m).__name__ == "Conv1D" for n, m in model.named_modules() if n in set(targets))
    config = LoraConfig(task_type=TaskType[_PEFT_TASK_TYPES[auto_class]], r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                        lora_dropout=cfg.lora.dropout, target_modules=targets, modules_to_save=list(full),
                        fan_in_fan_out=transposed)
    if cfg.train.gradient_checkpointing:
        model.enable_input_require_grads()  # else frozen embeddings leave checkpointed blocks without gradient
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft calls a transformers API deprecated for v6
        try:
            model = get_peft_model(model, config)
        except ValueError as exc:
            if "not found in the base model" not in str(exc):
                raise
            leaves = sorted({n.rsplit(".", 1)[-1] for n in lora_targets(model, [*full, *head])})
            raise ModelError(f"lora.target_modules {cfg.lora.target_modules} match no layer of "
                             f"{type(model).__name__}; its linear layers are: {', '.join(leaves)}") from None
    total, trainable = count_parameters(model)
    in_full = f" ({', '.join(full)} in full)" if full else ""
    log(f"LoRA r={cfg.lora.r} on {len(targets)} layers; training {format_params(trainable)} of "
        f"{format_params(total)} parameters{in_full}")
    return model


def _train(p: _Prepared, run_dir: Path, started: float) -> RunResult:
    from llmtune.engine.trainer import EngineInputs, build_trainer, final_evaluate

    cfg = p.cfg
    parts = p.task.engine_parts(p.tokenizer)
    derive_metrics = parts.pop("derive_metrics", None)  # e.g. perplexity from the eval loss
    inputs = EngineInputs(p.model, p.tokenizer, p.features.train, p.features.eval,
                          tokens_per_step=_tokens_per_step(cfg, p.features.train),
                          group_by_length="length" in p.features.train.column_names,
                          new_parameters=p.new_parameters, **parts)
    trainer, throughput = build_trainer(cfg, inputs, run_dir, precision=p.precision,
                                        time_budget_s=_budget_left(cfg, started), derive_metrics=derive_metrics)
    metrics = dict(trainer.train(resume_from_checkpoint=p.checkpoint).metrics)
    if p.features.eval is not None:
        metrics.update(final_evaluate(trainer))
        if is_main_process():
            metrics.update(p.task.report(run_dir))
    _save(trainer, p, run_dir)
    metrics.update(throughput.summary())
    metrics["wall_seconds"] = time.monotonic() - started
    return finish_run(cfg, run_dir, metrics)


def _tokens_per_step(cfg: RunConfig, train: Any) -> Optional[int]:
    """Average (unpadded) tokens per optimizer step, for tokens/s; rows vary in length."""
    import os

    if "length" not in train.column_names or len(train) == 0:
        return None
    mean = sum(train["length"]) / len(train)
    world = int(os.environ.get("WORLD_SIZE", 1))
    return max(1, round(mean * cfg.train.batch_size * cfg.train.grad_accum * world))


def _budget_left(cfg: RunConfig, started: float) -> Optional[float]:
    budget = cfg.train.time_budget_seconds
    if budget is None:
        return None
    left = budget - (time.monotonic() - started)
    if left <= 0:
        raise ConfigError(f"the time budget {cfg.train.time_budget} was used up before training started "
                          "(loading data and model); raise --time-budget")
    return left


def _save(trainer: Any, p: _Prepared, run_dir: Path) -> None:
    """Weights, config and tokenizer at the top of the run dir (LoRA: merged there, adapters in adapter/)."""
    if not p.cfg.lora.enabled:
        trainer.save_model(str(run_dir))  # the Trainer's processing_class (tokenizer) is saved with it
        return
    if not is_main_process():
        return
    model = trainer.model
    with quiet_transformers():
        model.save_pretrained(str(run_dir / "adapter"))
        # A merged copy loads anywhere (AutoModel..., pipelines, llmtune eval) without peft.
        model.merge_and_unload().save_pretrained(str(run_dir))
    p.tokenizer.save_pretrained(str(run_dir))
    p.tokenizer.save_pretrained(str(run_dir / "adapter"))
    log(f"LoRA adapters saved in {run_dir / 'adapter'}; merged model in {run_dir}")
