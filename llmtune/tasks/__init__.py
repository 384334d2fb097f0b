"""Task plug-ins: one module per task, one entry per task in ``llmtune.tasks.registry.TASKS``.

``registry`` is data only (names, columns, heads; no torch), so the CLI, the config schema and the
data layer read it at start-up; ``base`` says what a task module provides and how runners get one
(``training_task``, ``eval_task``). Task modules import torch and friends only inside functions.
"""
