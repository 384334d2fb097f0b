"""User-facing errors.

Every error a user can fix is an ``LlmtuneError``: the CLI prints its message on one line and exits
with code 2. Messages say what is wrong *and* what to do about it.
"""

from __future__ import annotations


class LlmtuneError(Exception):
    """Base class of errors caused by the user's input (flags, config, data, models)."""

    exit_code = 2


class ConfigError(LlmtuneError):
    """A recipe, flag or ``--set`` override is invalid."""


class DataError(LlmtuneError):
    """A dataset is missing, unreadable, or lacks what the task needs."""


class ModelError(LlmtuneError):
    """A model or tokenizer cannot be found, loaded or built as asked."""


class NotAvailableError(LlmtuneError):
    """A command or option whose implementation has not landed yet."""
