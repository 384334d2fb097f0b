"""``main_process_first``: under 2 real gloo processes rank 0 finishes the block before rank 1 starts it."""

import os
import socket
import subprocess
import sys

SCRIPT = """
import os, sys, time
from pathlib import Path
from llmtune.dist import main_process_first
marker = Path(sys.argv[1])
with main_process_first():
    if os.environ["RANK"] == "0":
        time.sleep(1.5)  # rank 1 would see no marker yet if it did not wait
        marker.write_text("rank 0 was here")
    else:
        print("rank 1 saw the marker" if marker.is_file() else "rank 1 ran first")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rank_zero_goes_first(tmp_path):
    port, marker = str(_free_port()), tmp_path / "marker"
    base = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
            "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(marker)], stdout=subprocess.PIPE, text=True,
                              env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in (0, 1)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "rank 1 saw the marker" in outputs[1]


def test_one_process_runs_the_block(tmp_path, monkeypatch):
    from llmtune.dist import main_process_first

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ran = []
    with main_process_first():
        ran.append(True)
    assert ran == [True]
