"""``llmtune sweep``: hyper-parameter search over finetune runs with Optuna.

Each trial is an ordinary finetune run (``runs.finetune.run``) in ``SWEEP_DIR/trial-NNN``, with the
values Optuna's TPE sampler (seeded) proposes for the ``--param`` keys. Every evaluation during a trial
reports the metric to Optuna (``PruningReporter``, handed to the trial's Trainer through
``engine.trackers.extra_callbacks``); the median pruner stops a trial whose metric is worse than the
median of earlier trials at the same step. A trial that fails (a bad combination of values, out of
memory...) is recorded as failed and the sweep goes on.

The study lives in a database (``sqlite:///SWEEP_DIR/study.db`` by default), so a killed sweep resumes
where it stopped when run again: ``--trials`` counts every trial in the study. ``--workers N`` runs N
processes on the study; on one machine they take trials under a file lock, so together they run exactly
``--trials`` trials with distinct numbers. Workers on several machines share a ``postgresql://`` study
(each machine may then start up to one trial more than asked).
"""

from __future__ import annotations

import fcntl
import multiprocessing
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Optional

from transformers import TrainerCallback

from llmtune.dist import log
from llmtune.errors import ConfigError, LlmtuneError
from llmtune.pipelines.sweep_spec import ParamSpec, SweepSpec

STUDY_NAME = "llmtune-sweep"
PRUNER_STARTUP_TRIALS = 3  # trials that finish unpruned before the median pruner judges others
_COUNTED = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")


def run_sweep(spec: SweepSpec) -> Any:
    """Run (or resume) the study of ``spec`` with its workers, then write the results.

    Returns:
        The Optuna study.
    """
    from llmtune.pipelines.sweep_report import write_outputs

    Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    study = open_study(spec, worker=0, create=True)
    stale = fail_stale_trials(study, spec.storage)
    if stale:
        log(f"resuming: trial(s) {', '.join(map(str, stale))} of the interrupted sweep marked failed")
    done = len(_trials(study, _COUNTED))
    log(f"sweep: {spec.trials} trials on {spec.metric} ({spec.direction}), {done} already in {spec.storage}")
    started = time.time()
    children = [_spawn(spec, k, started) for k in range(1, spec.workers)]
    work(spec, 0, started, study)
    for child in children:
        child.join()
        if child.exitcode:
            log(f"warning: worker {child.name} ended with exit code {child.exitcode}")
    return write_outputs(open_study(spec, worker=0), spec)


def open_study(spec: SweepSpec, worker: int, create: bool = False) -> Any:
    """The study in ``spec.storage`` with this worker's seeded TPE sampler and the median pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=spec.seed + worker)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS)
    if not create:
        return optuna.load_study(study_name=STUDY_NAME, storage=_storage(spec.storage), sampler=sampler, pruner=pruner)
    study = optuna.create_study(study_name=STUDY_NAME, storage=_storage(spec.storage), sampler=sampler, pruner=pruner,
                                direction=spec.direction, load_if_exists=True)
    if study.direction.name.lower() != spec.direction:
        raise ConfigError(f"--storage {spec.storage} holds a sweep that {study.direction.name.lower()}s; pass "
                          f"--direction {study.direction.name.lower()} or a new --storage/-o")
    return study


def _storage(url: str) -> Any:
    """An RDB storage; SQLite waits for a lock held by another worker instead of failing at once."""
    import optuna

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def fail_stale_trials(study: Any, storage: str) -> list[int]:
    """Mark trials left RUNNING by a killed sweep as failed (local SQLite only: elsewhere they may be alive)."""
    if not storage.startswith("sqlite"):
        return []
    stale = [t.number for t in _trials(study, ("RUNNING",))]
    for number in stale:
        study.tell(number, state=_state("FAIL"), skip_if_finished=True)
    return stale


def _trials(study: Any, states: tuple[str, ...]) -> list[Any]:
    return study.get_trials(deepcopy=False, states=tuple(_state(s) for s in states))


def _state(name: str) -> Any:
    from optuna.trial import TrialState

    return TrialState[name]


def _spawn(spec: SweepSpec, worker: int, started: float) -> Any:
    """Start worker ``worker`` in a fresh process (spawn: no torch state is shared)."""
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_worker_main, args=(asdict(spec), worker, started), name=str(worker))
    process.start()
    return process


def _worker_main(spec_fields: dict[str, Any], worker: int, started: float) -> None:
    """A spawned worker's entry point."""
    spec_fields["params"] = [ParamSpec(**p) for p in spec_fields["params"]]
    spec = SweepSpec(**spec_fields)
    work(spec, worker, started, open_study(spec, worker))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` shared by the workers of this machine."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def work(spec: SweepSpec, worker: int, started: float, study: Any) -> None:
    """Take and run trials until the study holds ``spec.trials`` of them or the time budget is spent."""
    lock = Path(spec.out_dir) / ".sweep.lock"
    while True:
        with _locked(lock):
            if len(_trials(study, _COUNTED)) >= spec.trials:
                return
            if spec.budget_s is not None and time.time() - started >= spec.budget_s:
                log(f"worker {worker}: time budget spent; no new trial")
                return
            trial = study.ask()
        run_trial(spec, study, trial, worker)


def run_trial(spec: SweepSpec, study: Any, trial: Any, worker: int = 0) -> Optional[float]:
    """Run one trial as a finetune run and tell the study how it ended; returns the metric (None: pruned/failed)."""
    import optuna

    from llmtune.engine.reliability import TrainingInterrupted

    values = {p.path: p.suggest(trial) for p in spec.params}
    run_dir = Path(spec.out_dir) / f"trial-{trial.number:03d}"
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("worker", worker)
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
    log(f"trial {trial.number} ({len(_trials(study, _COUNTED))}/{spec.trials}): {shown} -> {run_dir}")
    start = time.monotonic()
    reporter = PruningReporter(trial, spec.metric)
    try:
        value = _finetune(spec, values, run_dir, reporter)
    except optuna.TrialPruned as exc:
        _finish(study, trial, start, state="PRUNED", note=str(exc))
        return None
    except (KeyboardInterrupt, TrainingInterrupted):
        _finish(study, trial, start, state="FAIL", note="interrupted")
        raise
    except Exception as exc:  # noqa: BLE001 - one bad configuration must not end the sweep
        message = " ".join(str(exc).split()) or type(exc).__name__
        kind = "" if isinstance(exc, LlmtuneError) else f"{type(exc).__name__}: "
        _finish(study, trial, start, state="FAIL", note=f"{kind}{message}")
        return None
    _finish(study, trial, start, value=value)
    return value


def _finetune(spec: SweepSpec, values: dict[str, Any], run_dir: Path, reporter: "PruningReporter") -> float:
    """Train the trial's config with the pruning reporter; return the final value of the metric."""
    from llmtune.engine.trackers import extra_callbacks
    from llmtune.runs import finetune

    cfg = spec.trial_config(values, run_dir)
    with extra_callbacks([reporter]):
        result = finetune.run(cfg)
    value = result.metrics.get(spec.metric)
    if value is None:
        raise ConfigError(f"the run reported no {spec.metric}")
    return float(value)


def _finish(study: Any, trial: Any, start: float, value: Optional[float] = None, state: str = "COMPLETE",
            note: str = "") -> None:
    """Record the trial's time and outcome and tell the study."""
    seconds = time.monotonic() - start
    trial.set_user_attr("seconds", round(seconds, 2))
    if note:
        trial.set_user_attr("note", note[:500])
    if state == "COMPLETE":
        study.tell(trial, value)
        log(f"trial {trial.number}: {value:.4g} ({seconds:.0f} s)")
    else:
        study.tell(trial, state=_state(state))
        log(f"trial {trial.number} {state.lower()}: {note} ({seconds:.0f} s)")


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class PruningReporter(TrainerCallback):
    """Report the metric of each evaluation to an Optuna trial; raise ``TrialPruned`` when the pruner says so.

    Raising inside the Trainer ends the trial at once (no final evaluation, no saved model): a pruned
    trial only needs its reported values, which the study keeps.
    """

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.reported: list[tuple[int, float]] = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        import optuna

        value = (metrics or {}).get(self.metric)
        if value is None or not state.is_world_process_zero:
            return
        self.trial.report(float(value), state.global_step)
        self.reported.append((state.global_step, float(value)))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {state.global_step} ({self.metric} {value:.4g}, worse than "
                                     "the median of earlier trials there)")
