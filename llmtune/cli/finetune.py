"""``llmtune finetune``: adapt a pretrained model to classification, QA or generation."""

from typing import Annotated, Optional

import typer

from llmtune.cli import _options as o
from llmtune.cli._common import train_command

HELP = "Fine-tune a pretrained model for classification, extractive QA or generation (full or LoRA)."
EXAMPLES = (
    "Examples:\n\n"
    "  llmtune finetune --task classification --model runs/bert-tiny --dataset builtin:classification -o runs/cls\n\n"
    "  llmtune finetune --recipe classification/tiny-cpu --set train.lr=3e-5\n\n"
    "  llmtune finetune -t classification -m bert-base-uncased -d reviews.csv --label-column stars --lora -o runs/lora"
    "\n\n  llmtune finetune -t generation -m runs/llama-tiny -d builtin:instructions -o runs/sft  (alpaca; "
    "--format chat|prompt_completion|text)\n\n"
    "  llmtune finetune -t classification -m bert-base-uncased -d reviews.csv --dry-run   (memory and time estimate)\n\n"
    "  llmtune finetune -t generation -m runs/llama-small -d chat.jsonl --lora --quantize-base int8 -o runs/qlora"
)


def finetune(
    task: Annotated[Optional[o.TaskChoice], typer.Option("--task", "-t", help="What to train the model for.")] = None,
    recipe: o.Recipe = None,
    model: o.Model = None,
    dataset: o.Dataset = None,
    eval_dataset: o.EvalDataset = None,
    split: o.Split = None,
    eval_split: o.EvalSplit = None,
    text_column: o.TextColumn = None,
    text_pair_column: o.TextPairColumn = None,
    label_column: o.LabelColumn = None,
    columns: o.Columns = None,
    max_samples: o.MaxSamples = None,
    output_dir: o.OutputDir = None,
    epochs: o.Epochs = None,
    max_steps: o.MaxSteps = None,
    time_budget: o.TimeBudget = None,
    lr: o.Lr = None,
    batch_size: o.BatchSize = None,
    seed: o.Seed = None,
    lora: Annotated[Optional[bool], typer.Option("--lora", help="Train LoRA adapters instead of all weights.")] = None,
    quantize_base: Annotated[Optional[str], typer.Option(
        "--quantize-base", help="With --lora: int8 (torchao weight-only) or nf4 (bitsandbytes, CUDA) frozen base.")] = None,
    data_format: o.Format = None,
    train_on_prompt: o.TrainOnPrompt = None,
    packing: o.Packing = None,
    precision: o.Precision = None,
    gradient_checkpointing: o.GradientCheckpointing = None,
    compile: o.Compile = None,
    auto_find_batch_size: o.AutoFindBatchSize = None,
    report_to: o.ReportTo = None,
    num_processes: o.NumProcesses = None,
    accelerate_config: o.AccelerateConfig = None,
    num_machines: o.NumMachines = None,
    machine_rank: o.MachineRank = None,
    main_process_ip: o.MainProcessIp = None,
    main_process_port: o.MainProcessPort = None,
    overwrite: o.Overwrite = None,
    resume: o.Resume = None,
    allow_pickle: o.AllowPickle = None,
    trust_remote_code: o.TrustRemoteCode = None,
    set_: o.Set = None,
    print_config: o.PrintConfig = False,
    dry_run: o.DryRun = False,
) -> None:
    params = dict(locals())  # the parameters only, taken before the import binds `run`
    from llmtune.runs import finetune as runner

    train_command("finetune", params, runner.run, runner.dry_run)
