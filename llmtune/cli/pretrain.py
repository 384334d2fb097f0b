"""``llmtune pretrain``: pre-train a causal (GPT-2/Llama) or masked (BERT) LM from scratch."""

from typing import Annotated, Optional

import typer

from llmtune.cli import _options as o
from llmtune.cli._common import train_command

HELP = "Pre-train a language model from scratch (causal LM: gpt2/llama; masked LM: bert)."
EXAMPLES = (
    "Examples:\n\n"
    "  llmtune pretrain --recipe pretrain/gpt2-tiny --output-dir runs/gpt2-tiny\n\n"
    "  llmtune pretrain --dataset train.txt --eval-dataset val.txt --time-budget 4m -o runs/mine\n\n"
    "  llmtune pretrain --recipe pretrain/gpt2-tiny -o runs/gpt2-tiny --resume last   (continue after a crash)\n\n"
    "  llmtune pretrain --recipe pretrain/llama-small --dataset train.txt --dry-run   (parameters, memory, time)\n\n"
    "  llmtune pretrain --recipe pretrain/llama-small --dataset train.txt --num-processes 4   (accelerate launch)\n\n"
    "Each evaluation reports loss, perplexity and bits per char/byte; causal LMs also print a sample "
    "continuation (kept in RUN_DIR/samples.jsonl)."
)


def pretrain(
    recipe: o.Recipe = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="gpt2 | llama | bert (masked LM).")] = None,
    size: Annotated[Optional[str], typer.Option("--size", help="tiny | small | base.")] = None,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Tokenizer folder (default: train one).")] = None,
    model: o.Model = None,
    dataset: o.Dataset = None,
    eval_dataset: o.EvalDataset = None,
    text_column: o.TextColumn = None,
    max_samples: o.MaxSamples = None,
    output_dir: o.OutputDir = None,
    epochs: o.Epochs = None,
    max_steps: o.MaxSteps = None,
    time_budget: o.TimeBudget = None,
    lr: o.Lr = None,
    batch_size: o.BatchSize = None,
    seed: o.Seed = None,
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
    set_: o.Set = None,
    print_config: o.PrintConfig = False,
    dry_run: o.DryRun = False,
) -> None:
    params = dict(locals())  # the parameters only, taken before the import binds `run`
    from llmtune.runs import pretrain as runner

    train_command("pretrain", params, runner.run, runner.dry_run)
