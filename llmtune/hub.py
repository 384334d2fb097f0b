"""Fail fast and clearly when the Hugging Face Hub cannot be reached.

transformers/datasets retry for 20-50 s before failing with messages that do not name the fix. Before
any hub load we make one short connection attempt (or honour the offline variables) and, if the hub is
out of reach, say which id failed and that a local path works instead.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from llmtune.errors import DataError, LlmtuneError, ModelError

_TRUE = {"1", "true", "yes", "on"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_PROBE_TIMEOUT_S = 3.0
_reachable_cache: dict[str, bool] = {}


def hub_offline() -> bool:
    """True when the user asked for offline mode (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / HF_DATASETS_OFFLINE)."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in names)


def hub_reachable(timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """One TCP connection attempt to the hub endpoint (cached for the process)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint not in _reachable_cache:
        parsed = urlparse(endpoint)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
                _reachable_cache[endpoint] = True
        except OSError:
            _reachable_cache[endpoint] = False
    return _reachable_cache[endpoint]


def unreachable_error(repo_id: str, kind: str) -> LlmtuneError:
    """The one-line error for a hub id that cannot be fetched."""
    cls = DataError if kind == "dataset" else ModelError
    why = "offline mode is on (HF_HUB_OFFLINE)" if hub_offline() else "the Hugging Face Hub cannot be reached"
    return cls(
        f"{kind} '{repo_id}' is not a local path and {why}; pass a local file or folder "
        f"(or builtin:NAME for a dataset), or connect and retry"
    )


def require_hub(repo_id: str, kind: str) -> None:
    """Raise a clear error at once if ``repo_id`` would need the hub and the hub is out of reach.

    In offline mode this does nothing: the library then reads its local cache and fails in ~0 s
    itself, and callers map that failure with ``unreachable_error``.
    """
    if hub_offline():
        return
    if not hub_reachable():
        raise unreachable_error(repo_id, kind)


def looks_like_local_path(name: str) -> bool:
    """True when a model/tokenizer name can only mean a local folder (hub ids are ``name`` or ``org/name``).

    Existing paths, ``./``, ``/``, ``~`` prefixes, deeper paths and strings that cannot be hub ids
    count as local; so does ``runs/x`` when ``runs/`` exists here (a mistyped local path, not a hub
    user called "runs"). Callers then say "folder not found" instead of retrying the hub.
    """
    if os.path.exists(name) or name.startswith((".", "/", "~")) or "\\" in name or name.endswith("/"):
        return True
    if not _HUB_ID.match(name) or ".." in name or "--" in name:
        return True
    return "/" in name and Path(name.split("/", 1)[0]).is_dir()
