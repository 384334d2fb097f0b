"""The task registry: one ``TaskInfo`` entry per task, the one place task names are listed.

Everything that names tasks derives from ``TASKS``: the CLI's ``--task`` choices, the config's
``task`` values, the heads ``llmtune eval`` checks, the default recipe, what one evaluated feature
is called. The entries are data only (no torch, no task code): the config layer and the CLI read
them at start-up. Each entry names the module that implements the task (``tasks/base.py`` says what
that module provides); adding a task is one such module plus one entry here (docs/extending-tasks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# Architecture name endings of a causal LM head (GPT-2 calls its causal LM "LMHeadModel").
_CAUSAL_HEADS = ("ForCausalLM", "LMHeadModel")


@dataclass(frozen=True)
class ColumnSpec:
    """Canonical columns a task reads after column mapping.

    Attributes:
        required: Columns that must exist (after renaming) or the data is rejected.
        optional: Columns used when present.
        stratify: Column to stratify on when carving a validation split (None: random split).
    """

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    stratify: Optional[str] = None


@dataclass(frozen=True)
class TaskInfo:
    """A registry entry.

    Attributes:
        name: The task's name (``--task``, ``task:`` in recipes).
        columns: The columns its data needs.
        description: One line for ``--help`` and docs.
        module: The module implementing it (``training_task`` / ``eval_task``, see ``tasks/base.py``).
        commands: The commands that take it: ``finetune``, ``pretrain``, ``eval`` (``eval`` also means
            ``data inspect`` validates its columns).
        heads: Architecture name endings of the models it trains or evaluates (``llmtune eval`` refuses others).
        evaluated_as: The task ``llmtune eval`` scores a run of this task as (None: itself).
        unit: What one evaluated feature is, for the notes ("examples", "windows", "sequences").
        default_recipe: The recipe ``finetune`` uses when none is given (defaults chosen by measurement).
    """

    name: str
    columns: ColumnSpec
    description: str
    module: str
    commands: tuple[str, ...]
    heads: tuple[str, ...] = ()
    evaluated_as: Optional[str] = None
    unit: str = "examples"
    default_recipe: Optional[str] = None


_TEXT = ColumnSpec(required=("text",))

TASKS: dict[str, TaskInfo] = {
    "classification": TaskInfo(
        "classification",
        ColumnSpec(required=("text", "label"), optional=("text_pair",), stratify="label"),
        "text (or text pair) -> label",
        "llmtune.tasks.classification", ("finetune", "eval"), heads=("ForSequenceClassification",),
        default_recipe="classification/default",
    ),
    "qa": TaskInfo(
        "qa",
        ColumnSpec(required=("question", "context", "answers"), optional=("id", "title")),
        "extractive question answering (SQuAD format)",
        "llmtune.tasks.qa", ("finetune", "eval"), heads=("ForQuestionAnswering",), unit="windows",
        default_recipe="qa/default",
    ),
    "generation": TaskInfo(
        "generation",
        ColumnSpec(optional=("text", "prompt", "completion", "instruction", "input", "output", "messages")),
        "instruction / chat / completion fine-tuning of a causal LM",
        "llmtune.tasks.generation", ("finetune", "eval"), heads=_CAUSAL_HEADS,
    ),
    "causal_lm": TaskInfo("causal_lm", _TEXT, "next-token prediction on plain text", "llmtune.tasks.lm",
                          ("pretrain",), heads=_CAUSAL_HEADS, evaluated_as="lm"),
    "masked_lm": TaskInfo("masked_lm", _TEXT, "masked-token prediction on plain text", "llmtune.tasks.lm",
                          ("pretrain",), heads=("ForMaskedLM",), evaluated_as="lm"),
    "lm": TaskInfo("lm", _TEXT, "language-model evaluation on plain text", "llmtune.tasks.lm", ("eval",),
                   heads=(*_CAUSAL_HEADS, "ForMaskedLM"), unit="sequences"),
    "dpo": TaskInfo(
        "dpo",
        ColumnSpec(required=("chosen", "rejected"), optional=("prompt", "conversations")),
        "preference tuning of a causal LM on chosen/rejected pairs (TRL's DPOTrainer)",
        "llmtune.tasks.dpo", ("finetune", "eval"), heads=_CAUSAL_HEADS, unit="pairs",
    ),  # after lm: a causal LM evaluated without --task is scored as lm
}


def tasks_for(command: str) -> list[str]:
    """Names of the tasks ``command`` takes, in registry order."""
    return [name for name, info in TASKS.items() if command in info.commands]


def eval_name(task: str) -> str:
    """The task ``llmtune eval`` scores a run of ``task`` as (pre-training runs: ``lm``)."""
    info = TASKS.get(task)
    return (info.evaluated_as or info.name) if info else task


def task_of_architectures(architectures: list[str]) -> Optional[str]:
    """The first evaluation task (registry order) whose head one of ``architectures`` carries."""
    for name in tasks_for("eval"):
        if name != "generation" and any(a.endswith(TASKS[name].heads) for a in architectures):
            return name
    return None
