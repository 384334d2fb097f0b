"""``--num-processes N`` / ``--accelerate-config FILE``: re-launch the same command through ``accelerate launch``.

The command line the user typed is run again as ``accelerate launch ... -m llmtune <args>``, minus the
launch flags, so the children run the ordinary single-process code path under Accelerate's
environment (``RANK``, ``WORLD_SIZE`` ...), exactly as if the user had called ``accelerate launch``.

Without a GPU, Accelerate needs ``ACCELERATE_USE_CPU=true`` plus ``--multi_gpu`` to start N gloo
processes: ``--cpu --num_processes N`` starts only one, and ``--multi_gpu`` alone starts N copies that
do not talk to each other (see /work/shared/ENVIRONMENT.md). The Trainer then also needs
``use_cpu=True``, which ``engine.trainer.training_arguments`` sets whenever no GPU is present.

Several machines (``--num-machines N --machine-rank R --main-process-ip IP --main-process-port P``): the
same command runs on every machine, each with its own rank; ``--num-processes`` counts the processes of
ONE machine (Accelerate's ``--num_processes`` is the total, so it gets N times as many). Machine 0 listens
on IP:P (default port 29500) and the others connect to it (docs/cluster.md).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from llmtune.errors import ConfigError

LAUNCH_FLAGS = ("--num-processes", "--accelerate-config", "--num-machines", "--machine-rank", "--main-process-ip",
                "--main-process-port")
DEFAULT_PORT = 29500  # Accelerate's and torchrun's rendezvous port


@dataclass(frozen=True)
class Machines:
    """Where this process group sits among several machines (all defaults: one machine).

    Attributes:
        count: Machines taking part (``--num-machines``).
        rank: This machine's rank, 0 for the one that hosts the rendezvous (``--machine-rank``).
        ip: Address of machine 0, reachable from every machine (``--main-process-ip``).
        port: Rendezvous port on machine 0 (``--main-process-port``; default 29500 with several machines).
    """

    count: int = 1
    rank: int = 0
    ip: Optional[str] = None
    port: Optional[int] = None

    @property
    def several(self) -> bool:
        """Whether more than one machine takes part."""
        return self.count > 1


def check_machines(machines: Machines) -> None:
    """Refuse a machine count below 1, a rank outside it, several machines without an address, a bad port.

    Raises:
        ConfigError: One line saying which flag to fix.
    """
    if machines.count < 1:
        raise ConfigError(f"--num-machines {machines.count}: must be at least 1")
    if not 0 <= machines.rank < machines.count:
        raise ConfigError(f"--machine-rank {machines.rank}: must be 0..{machines.count - 1} with --num-machines "
                          f"{machines.count} (0 on the machine at --main-process-ip)")
    if machines.several and not machines.ip:
        raise ConfigError(f"--num-machines {machines.count}: pass --main-process-ip, the address of machine 0 that "
                          "every machine can reach")
    if machines.port is not None and not 1 <= machines.port <= 65535:
        raise ConfigError(f"--main-process-port {machines.port}: must be 1..65535")


def strip_launch_flags(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--num-processes N`` / ``--accelerate-config FILE`` (both ``--flag v`` and ``--flag=v``)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in LAUNCH_FLAGS:
            skip = True
            continue
        if arg.split("=", 1)[0] in LAUNCH_FLAGS and "=" in arg:
            continue
        out.append(arg)
    return out


def available_devices() -> tuple[int, str]:
    """How many processes this machine can give one device each: ``(count, "GPUs"|"CPU cores")``."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count(), "GPUs"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores, "CPU cores"


def check_num_processes(n: int, available: int, kind: str) -> None:
    """Refuse a process count below 1 or above the devices present.

    Raises:
        ConfigError: With the largest count that works.
    """
    if n < 1:
        raise ConfigError(f"--num-processes {n}: must be at least 1")
    if n > available:
        where = "GPUs" if kind == "GPUs" else "CPU cores (no GPU found)"
        raise ConfigError(f"--num-processes {n}: this machine has {available} {where}; "
                          f"pass --num-processes {available} or fewer")


def check_accelerate_config(path: str, gpu: bool = True) -> Path:
    """The Accelerate config file, checked to exist and parse as a YAML (or JSON) mapping.

    ``path`` may also name a shipped example: ``fsdp`` or ``deepspeed-zero2`` (``recipes/accelerate/``).

    Raises:
        ConfigError: Missing file, a YAML syntax error (with its line), not a mapping, or FSDP/DeepSpeed
            without a GPU (``gpu`` False).
    """
    import yaml

    from llmtune.config.recipes import recipes_dir

    file = Path(path).expanduser()
    shipped = recipes_dir() / "accelerate" / f"{path.removesuffix('.yaml')}.yaml"
    if not file.is_file() and "/" not in path and shipped.is_file():
        file = shipped
    if not file.is_file():
        examples = ", ".join(sorted(p.stem for p in (recipes_dir() / "accelerate").glob("*.yaml")))
        raise ConfigError(f"--accelerate-config: file not found: {path}; pass a config file written by "
                          f"`accelerate config` or a shipped example ({examples})")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"--accelerate-config {path} is not valid YAML{where}: {problem}; fix the file or write "
                          "a new one with `accelerate config --config_file FILE`") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--accelerate-config {path} must hold a YAML mapping of Accelerate settings "
                          "(compute_environment, distributed_type, num_processes ...)")
    kind = str(data.get("distributed_type", ""))
    if not gpu and kind in ("FSDP", "DEEPSPEED"):
        raise ConfigError(f"--accelerate-config {path}: {kind} needs CUDA GPUs and none was found; on CPU use "
                          "--num-processes N alone (DDP over gloo)")
    return file


def _free_port() -> int:
    """A free TCP port for the rendezvous, so parallel launches on one machine never collide on 29500."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(args: Sequence[str], num_processes: Optional[int], config_file: Optional[str], *,
                   gpu: bool, port: int, machines: Machines = Machines()) -> tuple[list[str], dict[str, str]]:
    """The ``accelerate launch`` argv and the extra environment that run ``llmtune <args>`` on N processes.

    Args:
        args: The llmtune arguments (command first), launch flags already removed.
        num_processes: Processes to start (None: what the config file says).
        config_file: An Accelerate config file, or None.
        gpu: Whether CUDA GPUs are present.
        port: Rendezvous port for process 0.
        machines: The machines taking part (``num_processes`` is per machine).

    Returns:
        ``(argv, env)``: run ``argv`` with ``os.environ`` updated by ``env``.
    """
    argv = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file:
        argv += ["--config_file", config_file]
    else:
        # Accelerate's defaults, spelled out: without them it warns about each one it guessed.
        argv += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if (num_processes or 1) * machines.count > 1:
            argv.append("--multi_gpu")
    if machines.several:
        if not config_file:
            argv[argv.index("--num_machines") + 1] = str(machines.count)
        else:
            argv += ["--num_machines", str(machines.count)]
        argv += ["--machine_rank", str(machines.rank), "--main_process_ip", str(machines.ip)]
    if num_processes or machines.several:
        argv += ["--num_processes", str((num_processes or 1) * machines.count)]  # Accelerate counts all machines
    argv += ["--main_process_port", str(port), "-m", "llmtune", *args]
    env = {} if gpu else {"ACCELERATE_USE_CPU": "true"}
    return argv, env


def relaunch(argv: Sequence[str], num_processes: Optional[int], config_file: Optional[str],
             machines: Machines = Machines()) -> int:
    """Run the llmtune command line ``argv`` again under ``accelerate launch`` and return its exit code.

    Raises:
        ConfigError: Already running under a launcher, a bad process count or a bad config file.
    """
    from llmtune.dist import log

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"--num-processes/--accelerate-config: this command already runs on "
                          f"{os.environ['WORLD_SIZE']} processes under a launcher; drop those flags")
    available, kind = available_devices()
    if num_processes is not None:
        check_num_processes(num_processes, available, kind)
    if config_file:
        config_file = str(check_accelerate_config(config_file, gpu=kind == "GPUs"))
    check_machines(machines)
    # Every machine must name the same port; one machine alone picks a free one unless told.
    port = machines.port or (DEFAULT_PORT if machines.several else _free_port())
    command, env = launch_command(strip_launch_flags(argv), num_processes, config_file,
                                  gpu=kind == "GPUs", port=port, machines=machines)
    shown = " ".join(["accelerate launch", *command[3:]])
    log(f"launching: {' '.join(f'{k}={v}' for k, v in env.items())} {shown}".replace("  ", " "))
    return subprocess.call(command, env={**os.environ, **env})
