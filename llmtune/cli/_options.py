"""Shared ``Annotated`` option aliases, so every command spells a flag the same way."""

from enum import Enum
from typing import Annotated, Optional

import typer

from llmtune.tasks.registry import tasks_for


# --task choices derive from the task registry (llmtune/tasks/registry.py): a new task appears here by itself.
TaskChoice = Enum("TaskChoice", {name: name for name in tasks_for("finetune")}, type=str)  # type: ignore[misc]
TaskChoice.__doc__ = "Tasks ``llmtune finetune`` trains."
InspectTask = Enum("InspectTask", {name: name for name in tasks_for("eval")}, type=str)  # type: ignore[misc]
InspectTask.__doc__ = "Tasks whose columns ``llmtune data inspect`` validates and ``llmtune eval`` scores."


class DataFormat(str, Enum):
    """Layouts of generation data (``llmtune.tasks.chat_formats``)."""

    text = "text"
    prompt_completion = "prompt_completion"
    alpaca = "alpaca"
    chat = "chat"
    sharegpt = "sharegpt"


Recipe = Annotated[
    Optional[str], typer.Option("--recipe", "-r", help="Recipe name (`llmtune recipes list`) or YAML path.")
]
Set = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override any config key, e.g. --set train.lr=3e-5 (repeatable; wins over flags)."),
]
PrintConfig = Annotated[bool, typer.Option("--print-config", help="Print the resolved config as YAML and exit.")]
Model = Annotated[Optional[str], typer.Option("--model", "-m", help="Hub id, local HF folder or llmtune run dir.")]
Dataset = Annotated[
    Optional[str], typer.Option("--dataset", "-d", help="File, folder, glob, hub id (name[:config]) or builtin:NAME.")
]
EvalDataset = Annotated[Optional[str], typer.Option("--eval-dataset", help="Separate evaluation data.")]
Split = Annotated[Optional[str], typer.Option("--split", help="Training split name within --dataset.")]
EvalSplit = Annotated[Optional[str], typer.Option("--eval-split", help="Evaluation split name.")]
TextColumn = Annotated[Optional[str], typer.Option("--text-column", help="Column holding the text.")]
TextPairColumn = Annotated[Optional[str], typer.Option("--text-pair-column", help="Column holding the second text.")]
LabelColumn = Annotated[Optional[str], typer.Option("--label-column", help="Column holding the label.")]
Columns = Annotated[
    Optional[str], typer.Option("--columns", help="Rename columns: source=target[,source=target...].")
]
MaxSamples = Annotated[Optional[int], typer.Option("--max-samples", help="Use at most N training rows.")]
OutputDir = Annotated[Optional[str], typer.Option("--output-dir", "-o", help="Run directory to write.")]
Epochs = Annotated[Optional[float], typer.Option("--epochs", help="Training epochs.")]
MaxSteps = Annotated[Optional[int], typer.Option("--max-steps", help="Stop after N optimizer steps.")]
TimeBudget = Annotated[Optional[str], typer.Option(
    "--time-budget", help="Wall-clock budget for the whole run (240s, 4m, 1h): the steps, warm-up and LR decay are "
    "fitted to it, never past the epochs; evaluation and save fit inside it.")]
Lr = Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Per-device batch size.")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed.")]
Overwrite = Annotated[Optional[bool], typer.Option("--overwrite", help="Replace a finished run in --output-dir.")]
Resume = Annotated[
    Optional[str], typer.Option("--resume", help="Continue from the last checkpoint ('last') or a checkpoint path.")
]
AllowPickle = Annotated[
    Optional[bool],
    typer.Option("--allow-pickle", help="Load pickled (.bin/.pt) weights, which can run code: only for models you trust."),
]
TrustRemoteCode = Annotated[
    Optional[bool],
    typer.Option("--trust-remote-code", help="Run the Python code a model ships with: only for authors you trust."),
]

Format = Annotated[
    Optional[DataFormat],
    typer.Option("--format", help="Generation data layout (default: detected from the columns)."),
]
TrainOnPrompt = Annotated[
    Optional[bool], typer.Option("--train-on-prompt", help="Generation: compute the loss on prompt tokens too.")
]
Packing = Annotated[
    Optional[bool], typer.Option("--packing", help="Generation: pack short examples into max_length rows.")
]
GradientCheckpointing = Annotated[
    Optional[bool],
    typer.Option("--gradient-checkpointing", help="Recompute activations in the backward pass: less memory, slower steps."),
]

class CleanFormat(str, Enum):
    """File formats ``llmtune data clean`` writes."""

    jsonl = "jsonl"
    parquet = "parquet"


class PrecisionChoice(str, Enum):
    """Training precisions (``train.precision``)."""

    auto = "auto"
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


Precision = Annotated[
    Optional[PrecisionChoice],
    typer.Option("--precision", help="auto = bf16 on GPUs that support it, fp32 on CPU; bf16/fp16 need a GPU."),
]
Compile = Annotated[
    Optional[bool], typer.Option("--compile", help="torch.compile the model (faster GPU steps; no gain on CPU).")
]
AutoFindBatchSize = Annotated[
    Optional[bool],
    typer.Option("--auto-find-batch-size", help="On out-of-memory, halve the per-device batch size and retry."),
]
DryRun = Annotated[
    bool,
    typer.Option("--dry-run", help="Check config, data and model; print parameters, memory and time estimates; "
                                   "exit without training."),
]
NumProcesses = Annotated[
    Optional[int],
    typer.Option("--num-processes", help="Re-launch on N processes (GPUs, or CPU processes) via `accelerate launch`."),
]
NumMachines = Annotated[
    Optional[int], typer.Option("--num-machines", help="Machines taking part (run the same command on each; docs/cluster.md)."),
]
MachineRank = Annotated[
    Optional[int], typer.Option("--machine-rank", help="This machine's rank among --num-machines (0: the one at --main-process-ip)."),
]
MainProcessIp = Annotated[
    Optional[str], typer.Option("--main-process-ip", help="Address of machine 0, reachable from every machine."),
]
MainProcessPort = Annotated[
    Optional[int], typer.Option("--main-process-port", help="Rendezvous port on machine 0 (default 29500 with several machines)."),
]
AccelerateConfig = Annotated[
    Optional[str],
    typer.Option("--accelerate-config", help="Accelerate config file to launch with, or a shipped example: fsdp, deepspeed-zero2."),
]
ReportTo = Annotated[
    Optional[list[str]],
    typer.Option("--report-to", help="Experiment tracker: tensorboard, wandb, mlflow or none (repeatable; "
                                     "needs llmtune[track]). TensorBoard/MLflow write under the run dir."),
]

# Flag parameter name -> dotted config path. Commands pass their locals() through
# ``_common.resolve_config`` which uses this table, so a flag is wired in exactly one place.
FLAG_PATHS: dict[str, str] = {
    "task": "task",
    "model": "model.name_or_path",
    "tokenizer": "model.tokenizer",
    "arch": "model.arch",
    "size": "model.size",
    "dataset": "data.dataset",
    "eval_dataset": "data.eval_dataset",
    "split": "data.split",
    "eval_split": "data.eval_split",
    "text_column": "data.text_column",
    "text_pair_column": "data.text_pair_column",
    "label_column": "data.label_column",
    "columns": "data.columns",
    "max_samples": "data.max_samples",
    "output_dir": "train.output_dir",
    "epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "time_budget": "train.time_budget",
    "lr": "train.lr",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "overwrite": "train.overwrite",
    "resume": "train.resume",
    "allow_pickle": "model.allow_pickle",
    "trust_remote_code": "model.trust_remote_code",
    "lora": "lora.enabled",
    "quantize_base": "lora.quantize_base",
    "data_format": "data.format",
    "train_on_prompt": "train.train_on_prompt",
    "packing": "train.packing",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "precision": "train.precision",
    "compile": "train.compile",
    "auto_find_batch_size": "train.auto_find_batch_size",
    "report_to": "train.report_to",
    "tok_type": "tokenizer.type",
    "vocab_size": "tokenizer.vocab_size",
    "min_frequency": "tokenizer.min_frequency",
    "special_tokens": "tokenizer.special_tokens",
    "max_new_tokens": "generate.max_new_tokens",
    "temperature": "generate.temperature",
    "top_k": "generate.top_k",
    "top_p": "generate.top_p",
    "repetition_penalty": "generate.repetition_penalty",
    "num_return_sequences": "generate.num_return_sequences",
    "stop": "generate.stop",
    "sample_seed": "generate.seed",  # `llmtune generate --seed`: --seed elsewhere is train.seed
    "prompt_column": "generate.prompt_column",
    "eval_batch_size": "train.eval_batch_size",  # `llmtune eval --batch-size`
    "eval_generate": "eval.generate",
    "host": "serve.host",  # `llmtune serve`
    "port": "serve.port",
    "api_key_env": "serve.api_key_env",
    "max_batch_size": "serve.max_batch_size",
    "max_queue": "serve.max_queue",
    "num_workers": "clean.num_workers",  # `llmtune data clean`
    "shard": "clean.shard",
    "decontaminate": "clean.decontaminate.files",
    "output_format": "clean.format",
    "teacher": "distill.teacher",  # `llmtune distill`
    "student": "model.name_or_path",
    "student_arch": "model.arch",
    "student_size": "model.size",
    "kd_temperature": "distill.temperature",  # --temperature elsewhere is generate.temperature
    "kd_alpha": "distill.alpha",
    "transfer_data": "distill.transfer_data",
    "heads": "prune.heads",  # `llmtune prune`
    "ffn": "prune.ffn",
    "layers": "prune.layers",
    "recover_steps": "prune.recover_steps",
    "recover_distill": "prune.recover_distill",
    "calibration_samples": "prune.calibration_samples",
}

# Command parameters that are NOT config keys, by the command name ``resolve_config`` gets ("*": every
# command), each with what handles it. ``resolve_config`` refuses a parameter found in neither this table
# nor FLAG_PATHS, and tests/unit/test_flags.py checks every registered command, so a new flag left out of
# both fails a test instead of being ignored.
_LAUNCH = {
    "dry_run": "train_command: check and estimate instead of training",
    "num_processes": "train_command: re-launch through `accelerate launch`",
    "accelerate_config": "train_command: re-launch through `accelerate launch`",
    "num_machines": "train_command: launch.Machines for `accelerate launch` on several machines",
    "machine_rank": "train_command: launch.Machines for `accelerate launch` on several machines",
    "main_process_ip": "train_command: launch.Machines for `accelerate launch` on several machines",
    "main_process_port": "train_command: launch.Machines for `accelerate launch` on several machines",
}
NON_CONFIG_PARAMS: dict[str, dict[str, str]] = {
    "*": {
        "recipe": "resolve_config: the recipe to start from (default: config.default_recipe)",
        "set_": "resolve_config: the --set overrides",
        "print_config": "resolve_config: print the resolved YAML and exit",
    },
    "pretrain": _LAUNCH,
    "finetune": _LAUNCH,
    "generate": {
        "prompt": "runs.generate.GenerateInputs",
        "file": "runs.generate.GenerateInputs",
        "output": "runs.generate.GenerateInputs",
        "chat": "runs.generate.GenerateInputs",
    },
    "data": {"examples": "data inspect: rows to show", "show_masking": "data inspect: masking to show"},
    "tokenizer": {"family": "runs.tokenizer.run(cfg, family)"},
}
