"""``llmtune distill``: train a small student on a teacher's output distribution (knowledge distillation)."""

from enum import Enum
from typing import Annotated, Optional

import typer

from llmtune.cli import _options as o
from llmtune.cli._common import print_summary, resolve_config

HELP = ("Distil a teacher into a smaller student: loss = alpha x T^2 x KL(teacher || student) + (1 - alpha) x task "
        "loss (classification, language modelling, generation on instruction data, extractive QA).")
EXAMPLES = (
    "Examples:\n\n"
    "  llmtune distill --teacher runs/cls-minilm --student runs/bert-small -t classification -d train.csv "
    "-o runs/cls-distilled\n\n"
    "  llmtune distill --teacher runs/llama-small --student-arch llama --student-size tiny -t lm -d corpus/ "
    "--time-budget 10m -o runs/llama-distilled\n\n"
    "  llmtune distill --teacher runs/llama-sft --student-arch llama --student-size tiny -t generation "
    "-d builtin:instructions -o runs/sft-distilled   (KL on the response tokens only)\n\n"
    "  llmtune distill --teacher runs/qa-minilm --student runs/bert-small -t qa -d builtin:qa -o runs/qa-distilled\n\n"
    "  llmtune distill ... -t classification --transfer-data unlabelled.txt   (extra text, teacher-labelled)\n\n"
    "  llmtune distill ... --temperature 4 --alpha 0.9   (more weight on the teacher; docs/distill-prune.md)"
)


class DistillTask(str, Enum):
    """Tasks ``llmtune distill`` takes."""

    classification = "classification"
    lm = "lm"
    generation = "generation"
    qa = "qa"


class StudentArch(str, Enum):
    """Architectures a student can be built from (the pretrain presets)."""

    gpt2 = "gpt2"
    llama = "llama"
    bert = "bert"


def distill(
    task: Annotated[Optional[DistillTask], typer.Option("--task", "-t", help="What the teacher does.")] = None,
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Teacher model folder, run dir or hub id.")] = None,
    student: Annotated[Optional[str], typer.Option("--student", help="Pretrained student (folder, run dir, hub id).")] = None,
    student_arch: Annotated[Optional[StudentArch], typer.Option(
        "--student-arch", help="Build the student from scratch with this architecture (the teacher's tokenizer).")] = None,
    student_size: Annotated[Optional[str], typer.Option("--student-size", help="Size preset: tiny, small, base.")] = None,
    kd_temperature: Annotated[Optional[float], typer.Option("--temperature", help="Softmax temperature T (> 0).")] = None,
    kd_alpha: Annotated[Optional[float], typer.Option("--alpha", help="Weight of the KL term, 0..1.")] = None,
    recipe: o.Recipe = None,
    dataset: o.Dataset = None,
    transfer_data: Annotated[Optional[str], typer.Option(
        "--transfer-data", help="-t classification: unlabelled text the teacher labels for the KL term only "
        "(a transfer set; file, folder or hub id).")] = None,
    eval_dataset: o.EvalDataset = None,
    text_column: o.TextColumn = None,
    label_column: o.LabelColumn = None,
    data_format: o.Format = None,
    max_samples: o.MaxSamples = None,
    output_dir: o.OutputDir = None,
    epochs: o.Epochs = None,
    max_steps: o.MaxSteps = None,
    time_budget: o.TimeBudget = None,
    lr: o.Lr = None,
    batch_size: o.BatchSize = None,
    seed: o.Seed = None,
    overwrite: o.Overwrite = None,
    allow_pickle: o.AllowPickle = None,
    set_: o.Set = None,
    print_config: o.PrintConfig = False,
) -> None:
    cfg = resolve_config("distill", locals())  # first: locals() holds the parameters only
    from llmtune.runs.distill import run

    print_summary("distill", run(cfg))
