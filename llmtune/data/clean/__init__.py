"""``llmtune data clean``: turn raw text into a clean, deduplicated pre-training corpus.

One module per concern: ``normalize`` (Unicode repair, markup to text), ``boilerplate`` (line removal),
``filters`` (length, language, quality), ``pii``, ``decontam``, ``dedup`` (exact + MinHash LSH),
``pipeline`` (the stages in their fixed order over shards, with per-stage statistics) and ``report``.
The libraries doing the work (ftfy, resiliparse, py3langid, datasketch) are the ``clean`` extra.
"""

from __future__ import annotations

import importlib.util

from llmtune.errors import NotAvailableError

#: import name -> pip name of the libraries the stages use.
LIBRARIES = {"ftfy": "ftfy", "resiliparse": "resiliparse", "py3langid": "py3langid", "datasketch": "datasketch"}


def require_libraries() -> None:
    """Fail in one line naming the extra when a library of the ``clean`` extra is missing.

    Raises:
        NotAvailableError: One or more of ftfy, resiliparse, py3langid, datasketch is not installed.
    """
    missing = [pip for module, pip in LIBRARIES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise NotAvailableError(
            f"llmtune data clean needs {', '.join(missing)}; install them with: pip install 'llmtune[clean]'"
        )
