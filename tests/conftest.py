"""Offline, CPU-only, isolated test environment (set before any HF library is imported)."""

import os
import tempfile
from pathlib import Path

import pytest

_HF_HOME = tempfile.mkdtemp(prefix="llmtune-hf-home-")
for name, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": _HF_HOME,
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "CUDA_VISIBLE_DEVICES": "",
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
}.items():
    os.environ[name] = value
os.environ.pop("LLMTUNE_DEBUG", None)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli():
    """Invoke the llmtune CLI in-process: ``result = cli("recipes", "list")`` (``helpers.invoke``)."""
    from helpers import invoke

    return invoke


def pytest_terminal_summary(terminalreporter):
    """Say how many table-driven bad-input cases passed (``test_bad_input_one_line_exit_2``), also under xdist."""
    counts: dict[str, int] = {}
    for report in terminalreporter.stats.get("passed", []):
        if report.when == "call" and "::test_bad_input_one_line_exit_2[" in report.nodeid:
            path = report.nodeid.split("::")[0]
            counts[path] = counts.get(path, 0) + 1
    if counts:
        where = ", ".join(f"{path} {n}" for path, n in sorted(counts.items()))
        terminalreporter.write_line(f"bad-input cases passed: {sum(counts.values())} ({where}), each exit 2 in one line")
