"""The data layer: load raw datasets, map their columns, pick or carve splits, and describe them.

Entry points (each module imports ``datasets`` only inside its functions, so importing this package
keeps the CLI fast):

* :func:`llmtune.data.sources.load_source` - a file, folder, glob, ``builtin:NAME`` or hub id -> DatasetDict
* :func:`llmtune.data.loading.load_task_data` - a ``DataConfig`` + a task's ``ColumnSpec`` -> :class:`TaskData`
* :func:`llmtune.data.inspect.inspect_data` / ``print_inspection`` - the report behind ``llmtune data inspect``
* :func:`llmtune.data.builtin.list_builtin` - the datasets shipped with the package
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "load_source": "llmtune.data.sources",
    "TaskData": "llmtune.data.loading",
    "load_task_data": "llmtune.data.loading",
    "stratified_split_indices": "llmtune.data.splits",
    "inspect_data": "llmtune.data.inspect",
    "print_inspection": "llmtune.data.inspect",
    "list_builtin": "llmtune.data.builtin",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Resolve exports on first use so ``import llmtune.data`` stays cheap and free of import cycles.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llmtune.data' has no attribute '{name}'")
