"""Run directories: the one place every runner writes its outputs.

Layout::

    RUN_DIR/
      config.yaml          resolved config (what --print-config shows)
      env.json             versions, device, git commit, world size (no secrets)
      metrics.json         final metrics
      logs/metrics.jsonl   one JSON object per logged step
      run_complete.json    written LAST; its absence means the run crashed or is still going

A finished run is never overwritten without ``--overwrite``; an unfinished one is continued with
``--resume`` or replaced with ``--overwrite``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from llmtune.errors import ConfigError

COMPLETE_MARKER = "run_complete.json"
_PACKAGES = ("llmtune", "torch", "transformers", "datasets", "tokenizers", "accelerate", "evaluate", "peft")
_SECRET = re.compile(r"hf_[A-Za-z0-9]{8,}")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def redact(text: str) -> str:
    """Hide Hugging Face tokens (``hf_...``) in text that will be printed or stored."""
    return _SECRET.sub("hf_***", text)


def is_complete(path: Path) -> bool:
    """True when ``path`` holds a run that finished."""
    return (Path(path) / COMPLETE_MARKER).is_file()


@dataclass
class RunDir:
    """A prepared run directory. Create with ``RunDir.prepare``."""

    path: Path

    @classmethod
    def prepare(cls, output_dir: str | Path, *, overwrite: bool = False, resume: bool = False,
                resumable: bool = True) -> "RunDir":
        """Check and create ``output_dir`` for a new (or resumed) run.

        Args:
            output_dir: The run dir.
            overwrite: Replace what it holds.
            resume: Continue the unfinished run it holds.
            resumable: Whether the command has ``--resume`` (its refusal names the flag only then).

        Raises:
            ConfigError: The path is a file, not writable, holds a finished run (without
                ``overwrite``) or an unfinished one (without ``resume``/``overwrite``).
        """
        path = Path(output_dir).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"output dir {path} is a file; choose a folder with --output-dir")
        if path.is_dir() and any(path.iterdir()):
            _check_existing(path, overwrite=overwrite, resume=resume, resumable=resumable)
        try:
            (path / "logs").mkdir(parents=True, exist_ok=True)
            probe = path / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:  # permission denied, read-only file system, a file where a folder should be...
            reason = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or type(exc).__name__)
            raise ConfigError(f"cannot write to output dir {path} ({reason}); choose another --output-dir") from exc
        return cls(path)

    def write_config(self, config_yaml: str) -> None:
        """Store the resolved config as config.yaml."""
        atomic_write_text(self.path / "config.yaml", redact(config_yaml))

    def write_env(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Store the environment record as env.json and return it."""
        record = {**environment_record(), **(extra or {})}
        atomic_write_text(self.path / "env.json", json.dumps(record, indent=2))
        return record

    def write_metrics(self, metrics: dict[str, Any], name: str = "metrics.json") -> None:
        """Store final metrics (JSON)."""
        atomic_write_text(self.path / name, json.dumps(metrics, indent=2, default=_json_default))

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to logs/metrics.jsonl."""
        with open(self.path / "logs" / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=_json_default) + "\n")

    def mark_complete(self, summary: dict[str, Any] | None = None) -> None:
        """Mark the run finished; call this last, after every output is written."""
        payload = {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(summary or {})}
        atomic_write_text(self.path / COMPLETE_MARKER, json.dumps(payload, indent=2, default=_json_default))


def _check_existing(path: Path, *, overwrite: bool, resume: bool, resumable: bool = True) -> None:
    if overwrite:
        # Drop the marker first so a crash while clearing never leaves a "complete" run behind.
        (path / COMPLETE_MARKER).unlink(missing_ok=True)
        shutil.rmtree(path)
        return
    if is_complete(path):
        raise ConfigError(
            f"output dir {path} holds a finished run; pass --overwrite to replace it or choose another --output-dir"
        )
    if not resume:
        continue_it = "pass --resume to continue it, --overwrite to start over" if resumable else \
            "pass --overwrite to start over"
        raise ConfigError(
            f"output dir {path} is not empty and holds no finished run; {continue_it}, or choose another --output-dir"
        )


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def environment_record() -> dict[str, Any]:
    """Versions, device and launch facts for reproducing a run. Never includes tokens or env secrets."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "device": _device(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "argv": [redact(arg) for arg in sys.argv],
        "git_commit": _git_commit(),
        "cpu_count": os.cpu_count(),
    }


def _device() -> dict[str, Any]:
    torch = sys.modules.get("torch")  # only report what a run already imported; never import here
    if torch is None:
        return {"type": "unknown"}
    if torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    return {"type": "cpu", "threads": torch.get_num_threads()}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
