"""The checks ``llmtune distill`` makes before anything heavy loads: task, teacher, student, tokenizers, labels.

Each raises one clear error (``ConfigError`` / ``ModelError``) naming what is wrong and how to fix it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from llmtune.config.schema import RunConfig
from llmtune.errors import ConfigError, ModelError

TASKS_TAKEN = ("classification", "lm", "generation", "qa")
# What each task's teacher must be (architecture name endings) and, for the refusal, what that is called.
_CAUSAL = ("ForCausalLM", "LMHeadModel")
TEACHER_HEADS: dict[str, tuple[tuple[str, ...], str]] = {
    "classification": (("ForSequenceClassification",), "a classification"),
    "lm": (_CAUSAL, "a causal LM"),
    "generation": (_CAUSAL, "a causal LM"),
    "qa": (("ForQuestionAnswering",), "an extractive question-answering"),
}


def check_request(cfg: RunConfig) -> str:
    """Refuse an impossible request before anything loads; return the teacher's model folder (or hub id).

    Raises:
        ConfigError: No teacher, no data, a task distill does not take, or both/neither student forms.
        ModelError: The teacher is a bare LoRA adapter folder or no model folder.
    """
    from llmtune.adapters import split_adapter
    from llmtune.modeling import resolve_model_path

    d = cfg.distill
    if cfg.task not in TASKS_TAKEN:
        raise ConfigError(f"distill takes --task {', '.join(TASKS_TAKEN)}, not {cfg.task!r}")
    if not d.teacher:
        raise ConfigError("distill needs a teacher; pass --teacher MODEL_FOLDER_OR_RUN_DIR")
    if cfg.data.dataset is None:
        raise ConfigError("distill needs data; pass --dataset FILE|FOLDER (unlabelled text is enough for -t lm)")
    if d.transfer_data and cfg.task != "classification":
        raise ConfigError(f"--transfer-data (unlabelled text the teacher labels) is for -t classification, not "
                          f"{cfg.task}; for -t lm the training data is unlabelled text already")
    if d.augment and cfg.task != "classification":
        raise ConfigError(f"distill.augment (a transfer set of masked copies) is for -t classification, not {cfg.task}; "
                          "set distill.augment=0")
    if cfg.model.name_or_path and cfg.model.arch:
        raise ConfigError("pass --student (a pretrained model) OR --student-arch/--student-size (built from scratch), "
                          "not both")
    if not cfg.model.name_or_path and not cfg.model.arch:
        raise ConfigError("distill needs a student: --student MODEL_FOLDER or --student-arch llama --student-size tiny")
    base, adapter = _adapter_of(d.teacher, split_adapter)
    if adapter is not None:
        raise ModelError(f"the teacher {d.teacher} is a bare LoRA adapter folder (base {base}); merge it first "
                         f"(`llmtune export {d.teacher} --merge -o FOLDER`, or pass the llmtune LoRA run dir, whose "
                         "top holds the merged model) and pass that folder as --teacher")
    return resolve_model_path(d.teacher)


def _adapter_of(name: str, split: Callable[[str], tuple[str, Optional[Path]]]) -> tuple[str, Optional[Path]]:
    """``split_adapter`` for any task type (it refuses non-generation adapters, which are adapters too)."""
    try:
        return split(name)
    except ModelError:
        return name, Path(name)


def check_teacher_head(task: str, architectures: list[str], teacher: str) -> None:
    """Refuse a teacher whose head does not do ``task`` (a classifier for -t qa...), naming the task it fits."""
    heads, what = TEACHER_HEADS[task]
    if any(a.endswith(heads) for a in architectures):
        return
    fits = next((name for name, (h, _) in TEACHER_HEADS.items() if any(a.endswith(h) for a in architectures)), None)
    hint = f"for it pass -t {fits}" if fits else \
        ("pre-train one first with `llmtune pretrain`" if task == "lm" else
         f"fine-tune one first with `llmtune finetune -t {task}`")
    raise ModelError(f"-t {task} distils {what} teacher; {teacher} is "
                     f"{', '.join(architectures) or 'of no known architecture'} ({hint})")


def check_same_tokenizer(student_tok: Any, teacher_tok: Any, student: str, teacher: str, why: str = "") -> None:
    """Refuse a student whose tokenizer differs from the teacher's (the teacher reads the student's input ids)."""
    if len(student_tok) != len(teacher_tok) or student_tok.get_vocab() != teacher_tok.get_vocab():
        raise ModelError(f"student {student} and teacher {teacher} do not share a tokenizer (vocab {len(student_tok)} "
                         f"vs {len(teacher_tok)} tokens){why}; distil into a student with the teacher's tokenizer, "
                         "e.g. --student-arch llama --student-size tiny")


def check_labels(model_names: list[str], data_names: list[str], who: str) -> None:
    """Refuse a model whose classes (in id order) are not the data's."""
    if [str(n) for n in model_names] != [str(n) for n in data_names]:
        raise ModelError(f"label spaces differ: {who} predicts [{', '.join(map(str, model_names))}] but the data has "
                         f"[{', '.join(map(str, data_names))}] (in id order); distil on data with the teacher's labels")


def teacher_top_k(cfg: RunConfig, vocab: int) -> int:
    """``distill.teacher_top_k`` for a per-token task (lm, generation), else 0; refused above the vocabulary.

    Raises:
        ConfigError: k is larger than the teacher's vocabulary.
    """
    k = cfg.distill.teacher_top_k or 0
    if cfg.task not in ("lm", "generation") or not k:
        return 0
    if k > vocab:
        raise ConfigError(f"distill.teacher_top_k {k} is larger than the teacher's vocabulary ({vocab} tokens); "
                          f"pass at most {vocab}, or 0 for the full vocabulary computed live each step")
    return k
