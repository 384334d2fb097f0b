"""What ``llmtune sweep`` searches, checked in full before any trial starts.

``--param PATH=KIND:ARGS`` names one config key (any dotted path ``--set`` accepts) and its search space:

    train.lr=loguniform:1e-5:1e-3     a float, log-uniform between the two ends
    model.dropout=uniform:0:0.2       a float, uniform between the two ends
    train.epochs=int:1:4              an integer, both ends included
    train.batch_size=choice:16,32     one of the listed values (read as YAML: numbers, true/false, text)

Every mistake (syntax, an unknown config path, an empty range, a value the config refuses, a metric the
task never reports) is a ``ConfigError`` with one line, raised before the first trial: the config of each
end of every range (and each choice) is built with ``config.load_config``, so paths and values are
checked by the same schema, with the same "did you mean", as ``--set``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from llmtune.config import load_config, parse_duration, parse_yaml
from llmtune.config.schema import RunConfig
from llmtune.errors import ConfigError

KINDS = ("loguniform", "uniform", "int", "choice")
EXAMPLE = "e.g. --param train.lr=loguniform:1e-5:1e-3 or --param train.batch_size=choice:16,32"

# The evaluation metrics each finetune task logs (tasks/<name>.py compute_metrics / derive_metrics).
_CLS = ("accuracy", *(f"{m}_{a}" for m in ("precision", "recall", "f1") for a in ("macro", "micro", "weighted")))
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": tuple(f"eval_{m}" for m in ("loss", *_CLS)),
    "qa": ("eval_exact_match", "eval_f1"),
    "generation": tuple(f"eval_{m}" for m in ("loss", "perplexity", "bits_per_token", "bits_per_char", "bits_per_byte")),
}
DEFAULT_METRIC = {"classification": "eval_accuracy", "qa": "eval_f1", "generation": "eval_loss"}
_LOWER_IS_BETTER = ("loss", "perplexity", "bits_per")


@dataclass(frozen=True)
class ParamSpec:
    """One searched config key.

    Attributes:
        path: Dotted config path (``train.lr``).
        kind: ``loguniform``, ``uniform``, ``int`` or ``choice``.
        low: Low end (numeric kinds).
        high: High end (numeric kinds).
        choices: The values of a ``choice``.
    """

    path: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """This parameter's value for an Optuna ``trial``."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high))
        return trial.suggest_float(self.path, self.low, self.high, log=self.kind == "loguniform")

    def examples(self) -> list[Any]:
        """Values whose configs are built up front: both ends, or every choice."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


def parse_param(text: str) -> ParamSpec:
    """Parse one ``--param PATH=KIND:ARGS``.

    Raises:
        ConfigError: Bad syntax, an unknown kind, numbers that are not numbers, an empty range, or a
            log range that reaches 0.
    """
    path, sep, space = text.partition("=")
    path, space = path.strip(), space.strip()
    kind, colon, args = space.partition(":")
    if not sep or not path or not colon:
        raise ConfigError(f"--param '{text}' needs the form path=kind:args ({'|'.join(KINDS)}), {EXAMPLE}")
    if kind not in KINDS:
        raise ConfigError(f"--param {path}: '{kind}' is not a search space; use one of {', '.join(KINDS)}, {EXAMPLE}")
    if kind == "choice":
        return ParamSpec(path, kind, choices=_choices(path, args))
    ends = args.split(":")
    if len(ends) != 2:
        raise ConfigError(f"--param {path}: {kind} needs two ends, {kind}:LOW:HIGH (got '{args}')")
    low, high = (_number(path, end, integer=kind == "int") for end in ends)
    if (kind == "int" and low > high) or (kind != "int" and low >= high):
        raise ConfigError(f"--param {path}: the range {low:g}..{high:g} is empty; write the low end first, "
                          f"below the high end")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"--param {path}: loguniform needs a low end above 0 (got {low:g}); use uniform for "
                          "ranges that start at 0")
    return ParamSpec(path, kind, low, high)


def _number(path: str, text: str, integer: bool) -> float:
    """``text`` as a number (an integer when ``integer``), else a one-line ConfigError."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--param {path}: '{text}' is not a number") from None
    if not math.isfinite(value) or (integer and value != int(value)):
        raise ConfigError(f"--param {path}: '{text}' is not {'an integer' if integer else 'a finite number'}")
    return value


def _choices(path: str, args: str) -> tuple[Any, ...]:
    """The values of ``choice:a,b,c``, each read as YAML (a number, a boolean or a string)."""
    items = [item.strip() for item in args.split(",")]
    if not args.strip() or any(not item for item in items):
        raise ConfigError(f"--param {path}: choice needs values separated by commas, e.g. choice:16,32 (got '{args}')")
    values = tuple(parse_yaml(item, f"--param {path}") for item in items)
    if any(not isinstance(v, (str, int, float, bool)) for v in values):
        raise ConfigError(f"--param {path}: each choice must be a number, true/false or text (got '{args}')")
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(f"--param {path}: a choice is listed twice in '{args}'")
    return values


@dataclass
class SweepSpec:
    """A checked sweep: the base config, the searched params and how trials are judged and stored.

    Attributes:
        recipe: Recipe name or path of the base config (None: the task's default).
        flags: Config flags (``{"model.name_or_path": ...}``) of the base config.
        sets: ``--set`` items of the base config.
        params: The searched keys.
        trials: Trials in the study in all (a resumed study counts the ones it has).
        metric: The evaluation metric (``eval_accuracy``).
        direction: ``maximize`` or ``minimize``.
        out_dir: The sweep folder (trial run dirs, sweep.md, best.yaml, plots).
        storage: Optuna storage URL.
        workers: Processes working on the study.
        budget_s: No trial starts after this many seconds (None: no limit).
        seed: Seed of the TPE sampler (worker k uses seed + k).
        task: The finetune task of the base config.
    """

    recipe: Optional[str]
    flags: dict[str, Any]
    sets: list[str]
    params: list[ParamSpec]
    trials: int
    metric: str
    direction: str
    out_dir: str
    storage: str
    workers: int = 1
    budget_s: Optional[float] = None
    seed: int = 42
    task: str = ""
    command: list[str] = field(default_factory=list)

    def trial_config(self, values: dict[str, Any], run_dir: Optional[Path] = None) -> RunConfig:
        """The finetune config of one trial: the base config with ``values`` at their paths."""
        flags = {**self.flags, **values}
        if run_dir is not None:
            flags.update({"train.output_dir": str(run_dir), "train.overwrite": True})
        return load_config("finetune", self.recipe, flags, self.sets)


def build_spec(recipe: Optional[str], flags: dict[str, Any], sets: list[str], params: list[str], *, trials: int,
               metric: Optional[str], direction: Optional[str], out_dir: str, storage: Optional[str],
               workers: int, time_budget: Optional[str]) -> SweepSpec:
    """Parse and check everything the sweep needs (see the module docstring).

    Raises:
        ConfigError: The first problem found, in one line.
    """
    if not params:
        raise ConfigError(f"nothing to search: pass at least one --param, {EXAMPLE}")
    if trials < 1 or workers < 1:
        raise ConfigError(f"--trials {trials} / --workers {workers}: both must be at least 1")
    specs = [parse_param(p) for p in params]
    seen = [s.path for s in specs]
    twice = sorted({p for p in seen if seen.count(p) > 1})
    if twice:
        raise ConfigError(f"--param {twice[0]} is given twice; search each key once")
    overridden = [s.path for s in specs if any(item.split("=", 1)[0].strip() == s.path for item in sets)]
    if overridden:
        raise ConfigError(f"--param {overridden[0]} is also fixed by --set {overridden[0]}=...; drop one of them")
    try:
        budget = parse_duration(time_budget)
    except ValueError as exc:
        raise ConfigError(f"--time-budget: {exc}") from None
    base = SweepSpec(recipe, dict(flags), list(sets), specs, trials, "", "", out_dir, "", workers, budget)
    cfg = _check_configs(base)
    base.task, base.seed = str(cfg.task), cfg.train.seed
    base.metric, base.direction = check_metric(cfg.task, metric, direction)
    base.storage = check_storage(storage, Path(out_dir))
    return base


def _check_configs(spec: SweepSpec) -> RunConfig:
    """Build the base config and, for each param, the config at each end (or choice); return the base."""
    cfg = spec.trial_config({})
    if cfg.train.output_dir:
        raise ConfigError("train.output_dir: each trial writes its own run dir under the sweep's -o DIR; drop "
                          "output_dir from the recipe/--set")
    for param in spec.params:
        for value in param.examples():
            try:
                spec.trial_config({param.path: value})
            except ConfigError as exc:
                raise ConfigError(f"--param {param.path} ({value!r}): {exc}") from None
    return cfg


def check_metric(task: Optional[str], metric: Optional[str], direction: Optional[str]) -> tuple[str, str]:
    """The metric (``eval_`` added when missing) and direction (from the metric when not given), checked.

    Raises:
        ConfigError: A task that cannot be swept, a metric it never reports, or a bad direction.
    """
    if task not in TASK_METRICS:
        raise ConfigError(f"task: sweep runs finetune trials; set --task or a recipe with one of {', '.join(TASK_METRICS)}")
    name = DEFAULT_METRIC[task] if not metric else (metric if metric.startswith("eval_") else f"eval_{metric}")
    if name not in TASK_METRICS[task]:
        raise ConfigError(f"--metric {metric}: {task} never reports it; choose one of {', '.join(TASK_METRICS[task])}")
    if direction is None:
        direction = "minimize" if any(word in name for word in _LOWER_IS_BETTER) else "maximize"
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"--direction {direction}: use maximize or minimize")
    return name, direction


def check_storage(storage: Optional[str], out_dir: Path) -> str:
    """The Optuna storage URL: ``sqlite:///OUT/study.db`` by default; other URLs must be a database URL."""
    if not storage:
        return f"sqlite:///{(out_dir / 'study.db').resolve()}"
    scheme = storage.split(":", 1)[0].split("+", 1)[0]
    if "://" not in storage or scheme not in ("sqlite", "postgresql", "mysql"):
        raise ConfigError(f"--storage {storage}: use a database URL, sqlite:///PATH/study.db (one machine) or "
                          "postgresql://USER@HOST/DB (workers on several machines)")
    return storage
