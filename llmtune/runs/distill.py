"""``llmtune distill``: train a small student on a teacher's output distribution -> run dir.

    teacher + student checks -> data -> task features (the registry's classification / qa / generation
    task, tasks.lm for -t lm) -> student (pretrained, or built from --student-arch/--student-size on the
    teacher's tokenizer) -> engine with ``engine.distill.DistillLoss`` as the task-level loss -> evaluate -> save

The runner reuses the lower layers only: the tasks' own ``prepare``/collators/metrics (the very ones
``llmtune finetune`` uses, so a generation row is rendered, chat-templated and masked exactly as in
fine-tuning) and the shared engine, so a distilled student is a normal run dir that every command loads.
Every task reads the teacher's tokenization: classification needs the teacher's label names to equal the
data's (and the student's, when it has a head); LM, generation and QA need one tokenizer for both (checked
by vocabulary, naming both sizes; for QA the windows and answer offsets must line up). Unlabelled text is
enough for LM: the task term is next-token prediction on the same text. The task fixes which logits the
KL compares (``engine.distill``): class or token logits where the labels count (generation: the response
tokens only), start and end logits for QA.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from llmtune.config.schema import DEFAULT_PRETRAIN_ARCH, RunConfig
from llmtune.dist import is_main_process, log
from llmtune.errors import DataError, ModelError
from llmtune.data.sources import PROGRESS_ROWS, datasets_progress
from llmtune.engine.distill_checks import (check_labels, check_request, check_same_tokenizer, check_teacher_head,
                                           teacher_top_k)
from llmtune.runs.common import RunResult, finish_run, is_fresh, removed_on_bad_input, start_run


@dataclass
class _Prepared:
    """Everything training needs, checked before the first step."""

    task: Any
    tokenizer: Any
    student: Any
    teacher: Any
    train: Any
    eval: Optional[Any]
    parts: dict[str, Any]
    view: Any  # engine.distill.LogitView: which logits the KL compares


def run(cfg: RunConfig) -> RunResult:
    """Distil ``cfg.distill.teacher`` into the student ``cfg.model`` describes; return where everything went."""
    started = time.monotonic()
    teacher_path = check_request(cfg)
    student_name = Path(cfg.model.name_or_path.rstrip("/")).name if cfg.model.name_or_path else \
        f"{cfg.model.arch}-{cfg.model.size}"
    default_dir = Path("runs") / f"distill-{cfg.task}-{student_name}"
    output_dir = Path(cfg.train.output_dir or default_dir).expanduser()
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"output_dir": str(output_dir)})})
    fresh = is_fresh(cfg, output_dir)
    run_dir = start_run(cfg, default_name=default_dir.name)
    with removed_on_bad_input(run_dir, fresh):
        prepared = _prepare(cfg, teacher_path)
    return _train(cfg, prepared, run_dir, started)


def _prepare(cfg: RunConfig, teacher_path: str) -> _Prepared:
    from llmtune.data.loading import load_task_data
    from llmtune.modeling import load_pretrained, model_tokenizer
    from llmtune.tasks.registry import TASKS

    config = load_pretrained(teacher_path, "AutoConfig", trust_remote_code=cfg.model.trust_remote_code)
    check_teacher_head(str(cfg.task), [str(a) for a in config.architectures or []], cfg.distill.teacher or teacher_path)
    teacher_top_k(cfg, getattr(config, "vocab_size", 0))  # refused before anything heavy loads
    data = load_task_data(cfg.data, TASKS[str(cfg.task)].columns, seed=cfg.train.seed)
    for note in data.notes:
        log(note)
    tokenizer = model_tokenizer(cfg, teacher_path)
    if cfg.model.name_or_path:
        check_same_tokenizer(model_tokenizer(cfg, cfg.model.name_or_path), tokenizer, cfg.model.name_or_path,
                             cfg.distill.teacher or teacher_path,
                             " (QA windows and answer offsets must line up)" if cfg.task == "qa" else "")
    if cfg.task in ("classification", "qa"):
        return _with_head(cfg, teacher_path, data, tokenizer, config)
    if cfg.task == "generation":
        return _generation(cfg, teacher_path, data, tokenizer)
    return _language_model(cfg, teacher_path, data, tokenizer)


def _with_head(cfg: RunConfig, teacher_path: str, data: Any, tokenizer: Any, teacher_config: Any) -> _Prepared:
    """Classification or QA: the registry task's features, a student with the task's head, the teacher."""
    from llmtune.engine.distill import LabelLogits, SpanLogits
    from llmtune.modeling import capped_max_length, load_pretrained
    from llmtune.tasks.base import training_task

    task = training_task(cfg)
    task.check_tokenizer(tokenizer)
    max_length = capped_max_length(cfg.train.max_length, teacher_config, tokenizer)
    with datasets_progress(len(data.train) >= PROGRESS_ROWS):
        features = task.prepare(data, tokenizer, max_length)
    for note in features.notes:
        log(note)
    names = None
    if cfg.task == "classification":
        names = task.space.names
        if task.space.multi_label:
            raise DataError("distill supports single-label classification only; the data has multi-label rows")
        check_labels(list(teacher_config.id2label.values()), names, f"teacher {cfg.distill.teacher}")
    train = _with_transfer_set(cfg, task, data.train, tokenizer, max_length, features.train) \
        if cfg.distill.augment or cfg.distill.transfer_data else features.train  # after the label checks
    student, new = _student(cfg, task.auto_class, tokenizer, task.model_kwargs(), names)
    teacher = load_pretrained(teacher_path, task.auto_class, trust_remote_code=cfg.model.trust_remote_code,
                              allow_pickle=cfg.model.allow_pickle)
    view = LabelLogits() if cfg.task == "classification" else SpanLogits()
    return _Prepared(task, tokenizer, student, teacher, train, features.eval,
                     {**task.engine_parts(tokenizer), "new_parameters": new}, view=view)


def _with_transfer_set(cfg: RunConfig, task: Any, rows: Any, tokenizer: Any, max_length: int, train: Any) -> Any:
    """Classification: ``train`` plus a transfer set labelled ``KD_ONLY`` (only the KL term sees it): the
    ``distill.augment`` masked copies of each training row and/or the rows of ``distill.transfer_data``
    (``data.augment``). The evaluation rows are never touched."""
    from datasets import concatenate_datasets

    from llmtune.data.augment import TEXT_COLUMNS, unlabelled_rows
    from llmtune.tasks.classification import drop_unusable, featurize_rows

    d, parts = cfg.distill, [train]
    rows = drop_unusable(rows, "the training data", [])
    rows = rows.select_columns([c for c in (*TEXT_COLUMNS, "label") if c in rows.column_names])
    if d.augment:
        parts.append(_masked_copies(cfg, rows, tokenizer))
    if d.transfer_data:
        extra = unlabelled_rows(d.transfer_data, d.transfer_column, rows)
        parts.append(extra)
        log(f"transfer set: {len(extra)} rows of {d.transfer_data}, labelled by the teacher alone (KL term only)")
    features, _ = featurize_rows(concatenate_datasets(parts[1:]), tokenizer, max_length, task.space,
                                 "the transfer set", [])
    return concatenate_datasets([train, features.map(_kd_only, batched=True, desc="marking the transfer set")])


def _masked_copies(cfg: RunConfig, rows: Any, tokenizer: Any) -> Any:
    from llmtune.data.augment import mask_token_of, transfer_rows

    d, token = cfg.distill, mask_token_of(tokenizer)
    if token is None:
        raise ModelError("distill.augment masks words with the tokenizer's mask or unknown token, and the teacher's "
                         "tokenizer has neither; set distill.augment=0")
    copies = transfer_rows(rows, d.augment, d.augment_mask, token, cfg.train.seed)
    log(f"transfer set: {len(copies)} masked copies ({d.augment} a training row, each word replaced by {token} with "
        f"p={d.augment_mask:g}), labelled by the teacher alone (KL term only)")
    return copies


def _kd_only(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    from llmtune.engine.distill import KD_ONLY

    return {"labels": [KD_ONLY] * len(batch["labels"])}


def _student(cfg: RunConfig, auto_class: str, tokenizer: Any, kwargs: dict[str, Any],
             names: Optional[list[str]] = None, vocab_size: Optional[int] = None) -> tuple[Any, frozenset[str]]:
    """The student, pretrained (``--student``) or built from the preset on the teacher's tokenizer, with
    ``model.dropout`` and ``train.freeze_embeddings`` applied as finetune does; also the names of the weights
    it had to create (a new head: they learn at ``train.head_lr_multiplier`` x the lr)."""
    import torch
    import transformers

    from llmtune.adapters import freeze_input_embeddings
    from llmtune.modeling import (
        build_config, count_parameters, dropout_fields, format_params, load_pretrained, quiet_transformers,
    )

    torch.manual_seed(cfg.train.seed)
    new: frozenset[str] = frozenset()
    if cfg.model.name_or_path:
        config = load_pretrained(cfg.model.name_or_path, "AutoConfig", trust_remote_code=cfg.model.trust_remote_code)
        has_head = any(str(a).endswith("ForSequenceClassification") for a in config.architectures or [])
        if names is not None and has_head:
            check_labels(list(config.id2label.values()), names, f"student {cfg.model.name_or_path}")
        with quiet_transformers():
            model, info = load_pretrained(
                cfg.model.name_or_path, auto_class, trust_remote_code=cfg.model.trust_remote_code,
                allow_pickle=cfg.model.allow_pickle, output_loading_info=True,
                **{**dropout_fields(config, cfg.model.dropout), **kwargs})
        new = frozenset(str(k) for k in info.get("missing_keys", ()))
    else:
        overrides = {**({"vocab_size": vocab_size} if vocab_size else {}), **dict(cfg.model.config)}
        config = build_config(cfg.model.arch or DEFAULT_PRETRAIN_ARCH, cfg.model.size, overrides, tokenizer,
                              cfg.train.max_length)
        for key, value in {**dropout_fields(config, cfg.model.dropout), **kwargs}.items():
            setattr(config, key, value)
        model = getattr(transformers, auto_class).from_config(config)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.train.freeze_embeddings:
        freeze_input_embeddings(model)
    log(f"student: {cfg.model.name_or_path or f'{cfg.model.arch}-{cfg.model.size} from scratch'} as "
        f"{type(model).__name__}, {format_params(count_parameters(model)[0])} parameters")
    return model, new


def _language_model(cfg: RunConfig, teacher_path: str, data: Any, tokenizer: Any) -> _Prepared:
    from llmtune.engine.distill import LabelLogits
    from llmtune.modeling import capped_max_length
    from llmtune.tasks.lm import LanguageModelTask, text_units_per_token

    task = LanguageModelTask(masked=False)
    teacher = _causal_teacher(cfg, teacher_path)
    block = capped_max_length(cfg.train.max_length, teacher.config, tokenizer)
    with datasets_progress(len(data.train) >= PROGRESS_ROWS):
        train = task.preprocess(data.train, tokenizer, block, desc="packing train")
        evaluation = task.preprocess(data.validation, tokenizer, block, desc="packing eval") \
            if data.validation is not None else None
    if len(train) == 0:
        raise DataError(f"the training text is too short for one block of {block} tokens; add text or lower "
                        "--set train.max_length")
    evaluation = evaluation if evaluation is not None and len(evaluation) else None
    student = _causal_student(cfg, tokenizer, teacher)
    units = text_units_per_token(evaluation if evaluation is not None else train, block)
    log(f"data: {len(train)} training blocks, {len(evaluation) if evaluation is not None else 0} evaluation blocks "
        f"of {block} tokens")
    parts = {"collator": task.collator(tokenizer), "derive_metrics": _text_metrics(units)}
    return _Prepared(task, tokenizer, student, teacher, train, evaluation, parts, view=LabelLogits(shift=True))


def _generation(cfg: RunConfig, teacher_path: str, data: Any, tokenizer: Any) -> _Prepared:
    """Instruction / chat / completion rows through finetune's generation task: the same rendering, chat
    template and labels (prompt tokens -100), which are also the KL's mask (response tokens only)."""
    from llmtune.engine.distill import LabelLogits
    from llmtune.modeling import capped_max_length
    from llmtune.tasks.base import training_task

    task = training_task(cfg)
    task.check_tokenizer(tokenizer)
    teacher = _causal_teacher(cfg, teacher_path)
    with datasets_progress(len(data.train) >= PROGRESS_ROWS):
        features = task.prepare(data, tokenizer, capped_max_length(cfg.train.max_length, teacher.config, tokenizer))
    for note in features.notes:
        log(note)
    student = _causal_student(cfg, tokenizer, teacher)
    for model in (student, teacher):  # generate stops at eos; packing only where the attention isolates examples
        task.check_model(model)
    return _Prepared(task, tokenizer, student, teacher, features.train, features.eval, task.engine_parts(tokenizer),
                     view=LabelLogits(shift=True))


def _causal_teacher(cfg: RunConfig, teacher_path: str) -> Any:
    from llmtune.modeling import load_pretrained

    return load_pretrained(teacher_path, "AutoModelForCausalLM", trust_remote_code=cfg.model.trust_remote_code,
                           allow_pickle=cfg.model.allow_pickle)


def _causal_student(cfg: RunConfig, tokenizer: Any, teacher: Any) -> Any:
    """The causal-LM student on the teacher's vocabulary; refused when its output rows differ (logits must align)."""
    student, _ = _student(cfg, "AutoModelForCausalLM", tokenizer, {}, vocab_size=teacher.config.vocab_size)
    rows_s, rows_t = student.get_output_embeddings().weight.shape[0], teacher.get_output_embeddings().weight.shape[0]
    if rows_s != rows_t:
        raise ModelError(f"student and teacher vocab sizes differ ({rows_s} vs {rows_t} output rows); they must share "
                         "the tokenizer and vocabulary: build the student with --student-arch/--student-size")
    return student


def _text_metrics(units: dict[str, float]) -> Callable[[dict[str, float], str], dict[str, float]]:
    """Perplexity and bits per token/char/byte from each evaluation's (task) loss."""
    from llmtune.tasks.lm import lm_eval_metrics

    def derive(metrics: dict[str, float], prefix: str) -> dict[str, float]:
        return {f"{prefix}_{k}": v for k, v in lm_eval_metrics(metrics[f"{prefix}_loss"], units).items()}

    return derive


def _train(cfg: RunConfig, p: _Prepared, run_dir: Path, started: float) -> RunResult:
    from llmtune.engine.budget import finish_seconds, fit_to_budget
    from llmtune.engine.distill import DistillLogCallback, DistillLoss, first_callback
    from llmtune.engine.trainer import EngineInputs, build_trainer, final_evaluate
    from llmtune.modeling import resolve_precision

    parts = dict(p.parts)
    derive = parts.pop("derive_metrics", None)
    cache_rows = cfg.task == "classification"  # one logit vector a row; per-token tasks keep the top-k
    top_k = teacher_top_k(cfg, p.teacher.config.vocab_size) if cfg.distill.alpha > 0 else 0  # alpha 0: no teacher
    loss = DistillLoss(p.student, p.teacher, cfg.distill.temperature, cfg.distill.alpha,
                       task_loss=parts.pop("compute_loss", None), view=p.view, cache_rows=cache_rows, top_k=top_k)
    log(f"distilling: loss = {cfg.distill.alpha:g} x T^2 x KL(teacher || student) at T={cfg.distill.temperature:g} "
        f"+ {1 - cfg.distill.alpha:g} x task loss; teacher logits {_teacher_source(cache_rows, top_k)}")
    fill_seconds = _fill_top_k(cfg, p, loss) if top_k else 0.0  # inside the budget: fitted after it
    # A time budget fits the step count, warm-up and decay to the steps that fit (evaluations and save included).
    budget = fit_to_budget(cfg, started, n_rows=len(p.train), n_eval_rows=len(p.eval) if p.eval is not None else 0,
                           reserve_seconds=finish_seconds(p.student))
    cfg = budget.cfg
    callbacks = [*parts.pop("callbacks", []), *budget.callbacks]
    inputs = EngineInputs(p.student, p.tokenizer, p.train, p.eval, compute_loss=loss, callbacks=callbacks, **parts)
    trainer, throughput = build_trainer(cfg, inputs, run_dir, precision=resolve_precision(cfg.train.precision),
                                        time_budget_s=budget.seconds_left, derive_metrics=derive)
    first_callback(trainer, DistillLogCallback(loss.log))
    metrics = dict(trainer.train().metrics)
    if p.eval is not None:
        metrics.update(final_evaluate(trainer))
        if is_main_process() and hasattr(p.task, "report"):
            metrics.update(p.task.report(run_dir))
    trainer.save_model(str(run_dir))
    summary = loss.log.summary()
    if summary:
        log(f"loss terms (run means): KL {summary['distill_kd_term']:.4g} + task {summary['distill_task_term']:.4g} "
            f"({100 * summary['distill_kd_share']:.0f} % from the teacher)")
    if loss.cache is not None:
        summary["distill_teacher_rows_cached"] = loss.cache.hits
        summary["distill_teacher_rows_computed"] = loss.cache.misses
    if top_k:
        summary.update(distill_teacher_top_k=top_k, distill_teacher_pass_seconds=fill_seconds)
    metrics.update({**summary, **throughput.summary(), "wall_seconds": time.monotonic() - started})
    return finish_run(cfg, run_dir, metrics)


def _teacher_source(cache_rows: bool, top_k: int) -> str:
    if top_k:
        return f"top-{top_k} log-probs per token, cached in memory (one teacher pass over the training set)"
    return "cached in memory per row (one teacher pass a row)" if cache_rows else "computed live each step"


def _fill_top_k(cfg: RunConfig, p: _Prepared, loss: Any) -> float:
    """One teacher pass over the training rows (dataset order) into ``loss.cache``; logs and returns its seconds."""
    from accelerate import PartialState
    from rich.console import Console
    from rich.progress import track
    from torch.utils.data import DataLoader

    t0 = time.monotonic()
    batch = cfg.train.eval_batch_size or cfg.train.batch_size
    batches = DataLoader(p.train, batch_size=batch, shuffle=False, collate_fn=p.parts["collator"])
    console = Console(stderr=True)  # a bar only where someone watches: not in logs or pipes
    shown = track(batches, description="teacher top-k", console=console, transient=True,
                  disable=not (console.is_terminal and is_main_process()))
    loss.cache.fill(p.teacher, shown, PartialState().device)
    seconds = time.monotonic() - t0
    log(f"teacher pass: {len(loss.cache.rows)} training rows in {seconds:.1f} s, top-{loss.cache.k} "
        f"log-probs {loss.cache.nbytes() / 2**20:.1f} MiB in memory")
    return seconds
