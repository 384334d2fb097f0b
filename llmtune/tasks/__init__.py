"""Task plug-ins and their registry.

``TASK_INFO`` is light (no torch import) so the CLI and the data layer can ask which columns a task
needs; the heavy plug-in modules are imported only when a run needs them.
"""

from __future__ import annotations

from llmtune.tasks.base import ColumnSpec, Task, TaskInfo

TASK_INFO: dict[str, TaskInfo] = {
    "classification": TaskInfo(
        "classification",
        ColumnSpec(required=("text", "label"), optional=("text_pair",), stratify="label"),
        "text (or text pair) -> label",
    ),
    "qa": TaskInfo(
        "qa",
        ColumnSpec(required=("question", "context", "answers"), optional=("id", "title")),
        "extractive question answering (SQuAD format)",
    ),
    "generation": TaskInfo(
        "generation",
        ColumnSpec(optional=("text", "prompt", "completion", "instruction", "input", "output", "messages")),
        "instruction / chat / completion fine-tuning of a causal LM",
    ),
    "causal_lm": TaskInfo("causal_lm", ColumnSpec(required=("text",)), "next-token prediction on plain text"),
    "masked_lm": TaskInfo("masked_lm", ColumnSpec(required=("text",)), "masked-token prediction on plain text"),
    "lm": TaskInfo("lm", ColumnSpec(required=("text",)), "language-model evaluation on plain text"),
}

__all__ = ["ColumnSpec", "Task", "TaskInfo", "TASK_INFO"]
