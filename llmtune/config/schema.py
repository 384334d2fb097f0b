"""The one config object every command works from.

Sections mirror the way users think about a run: where the data comes from (``data``), which model
(``model``), how to train (``train``), optional LoRA (``lora``), tokenizer training
(``tokenizer``) and sampling (``generate``). Every model forbids unknown keys so a typo in a recipe
or ``--set`` is an error, never a silently ignored setting. Field descriptions double as
documentation for ``--print-config`` readers and the docs.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmtune.config.clean import CleanConfig
from llmtune.tasks.registry import TASKS, tasks_for

Command = Literal["pretrain", "finetune", "eval", "generate", "tokenizer", "data", "clean", "serve", "distill", "prune"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr)?\s*$")
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0}


def parse_duration(value: str | int | float | None) -> Optional[float]:
    """Parse ``240s``, ``4m``, ``1.5h`` or a bare number of seconds into seconds.

    Args:
        value: The duration as written by the user, or None.

    Returns:
        Seconds as a float, or None when ``value`` is None.

    Raises:
        ValueError: The text is not a duration.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"'{value}' is not a duration; write e.g. 240s, 4m or 1h")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a time budget must be positive")
    return seconds


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the data comes from and how its columns map onto what the task needs."""

    dataset: Optional[str] = Field(
        None, description="Training data: a file, directory, glob, hub id (name or name:config) or builtin:NAME."
    )
    eval_dataset: Optional[str] = Field(None, description="Separate evaluation data (same kinds of source).")
    split: str = Field("train", description="Split of `dataset` used for training.")
    eval_split: Optional[str] = Field(None, description="Split used for evaluation (default: validation/test if present).")
    eval_fraction: float = Field(
        0.1, gt=0, lt=1, description="Fraction carved off the training split when no evaluation data exists."
    )
    text_column: Optional[str] = Field(None, description="Source column holding the text.")
    text_pair_column: Optional[str] = Field(None, description="Source column holding the second text of a pair.")
    label_column: Optional[str] = Field(None, description="Source column holding the label.")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Extra renames, source column -> column the task expects."
    )
    max_samples: Optional[int] = Field(None, gt=0, description="Use at most this many training rows.")
    max_eval_samples: Optional[int] = Field(None, gt=0, description="Use at most this many evaluation rows.")
    allow_no_answer: bool = Field(False, description="QA: train and score unanswerable questions (SQuAD v2).")
    format: Optional[Literal["text", "prompt_completion", "alpaca", "chat", "sharegpt"]] = Field(
        None, description="Generation: data format (None: detected from the columns; see llmtune.tasks.chat_formats)."
    )


# pretrain's architecture when none is named: at the same size a Llama runs ~15 % more tokens/s than GPT-2
# on CPU and reached 2.38 vs 2.56 bits/char in the 240 s benchmark (see recipes/pretrain/llama-tiny.yaml).
DEFAULT_PRETRAIN_ARCH = "llama"


class ModelConfig(_Section):
    """Which model to start from, or which architecture to build from scratch."""

    name_or_path: Optional[str] = Field(None, description="Hub id, local HF folder or llmtune run dir.")
    arch: Optional[Literal["gpt2", "llama", "bert"]] = Field(
        None, description=f"Architecture built from scratch (pretrain default: {DEFAULT_PRETRAIN_ARCH})."
    )
    size: Literal["tiny", "small", "base"] = Field("tiny", description="Size preset for a model built from scratch.")
    config: dict[str, Any] = Field(
        default_factory=dict, description="Fields of the transformers config to override (e.g. n_layer)."
    )
    dropout: Optional[float] = Field(
        None, ge=0, lt=1, description="Set every dropout probability of the model config (None: keep the model's)."
    )
    tokenizer: Optional[str] = Field(None, description="Tokenizer folder or hub id (default: the model's own).")
    trust_remote_code: bool = Field(False, description="Allow code shipped with a hub model to run.")
    ignore_mismatched_sizes: bool = Field(False, description="Re-initialise heads whose shape does not match.")
    allow_pickle: bool = Field(False, description="Allow loading pickled (.bin) weights.")


class TokenizerConfig(_Section):
    """How to train a tokenizer (``llmtune tokenizer train`` and pretrain without --tokenizer)."""

    type: Literal["bpe", "wordpiece", "unigram", "char"] = "bpe"
    vocab_size: int = Field(8000, gt=0)
    min_frequency: int = Field(2, ge=1)
    special_tokens: Optional[list[str]] = Field(None, description="Extra special tokens to reserve.")
    model_max_length: int = Field(1024, gt=0)


class TrainConfig(_Section):
    """Optimisation, schedule, evaluation and checkpointing."""

    output_dir: Optional[str] = Field(None, description="Run directory to write.")
    epochs: float = Field(3.0, gt=0)
    max_steps: Optional[int] = Field(None, gt=0, description="Stop after this many optimizer steps (wins over epochs).")
    time_budget: Optional[str] = Field(None, description="Wall-clock budget, e.g. 240s, 4m, 1h.")
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(16, gt=0)
    eval_batch_size: Optional[int] = Field(None, gt=0)
    grad_accum: int = Field(1, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    warmup_fraction: float = Field(0.0, ge=0, lt=1, description="Warm-up as a fraction of all steps (if > 0).")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float = Field(1.0, ge=0)
    max_length: int = Field(256, gt=0, description="Longest sequence (block size for language models).")
    seed: int = 42
    eval_steps: Optional[int] = Field(None, gt=0, description="Evaluate every N steps (default: each epoch).")
    save_steps: Optional[int] = Field(None, gt=0, description="Checkpoint every N steps (default: each epoch).")
    save_total_limit: int = Field(2, gt=0, description="Keep at most this many checkpoints.")
    logging_steps: int = Field(10, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it (else fp16), fp32 on CPU; bf16/fp16 need a GPU."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less activation memory, slower steps."
    )
    compile: bool = Field(
        False, description="torch.compile the model (TrainingArguments.torch_compile); pays off on GPUs, not on CPU."
    )
    auto_find_batch_size: bool = Field(
        False, description="On out-of-memory, halve the per-device batch size and retry (needs accelerate)."
    )
    freeze_embeddings: bool = Field(
        False, description="Finetune: keep the input token embeddings fixed (faster steps on small models)."
    )
    freeze_layers: Union[int, Literal["auto"]] = Field(
        0, description="Finetune: keep the embeddings and the lowest N transformer blocks fixed (no backward through "
        "them); auto: the lowest block in models of 6+ blocks, none in shallower ones."
    )
    head_lr_multiplier: float = Field(
        1.0, gt=0, description="Finetune: learning-rate multiplier for weights trained from scratch (the new task head)."
    )
    class_weights: Optional[Union[Literal["balanced"], list[float], dict[str, float]]] = Field(
        None, description="Classification loss weights: 'balanced', one weight per label, or {label: weight}."
    )
    doc_stride: Optional[int] = Field(None, gt=0, description="QA: tokens shared by consecutive context windows.")
    train_on_prompt: bool = Field(
        False, description="Generation: compute the loss on prompt tokens too (default: on responses only)."
    )
    packing: bool = Field(
        False, description="Generation: pack short examples into rows of max_length, each attending only to itself."
    )
    mlm_probability: float = Field(
        0.15, gt=0, lt=1, description="Masked LM: fraction of tokens chosen for prediction each batch (dynamic masking)."
    )
    early_stopping_patience: Optional[int] = Field(None, gt=0)
    metric_for_best_model: Optional[str] = None
    resume: Optional[str] = Field(None, description="'last' or a checkpoint path to resume from.")
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="A NaN/inf training loss: stop (keeping the last good checkpoint) or skip that batch."
    )
    overwrite: bool = Field(False, description="Replace a finished run in output_dir.")
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "none"]] = Field(
        default_factory=list,
        description="Experiment trackers fed by the Trainer's integrations (needs llmtune[track]); [] or none: no tracker.",
    )

    @field_validator("freeze_layers")
    @classmethod
    def _check_freeze(cls, value: Union[int, str]) -> Union[int, str]:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be a number of blocks >= 0 or auto")
        return value

    @field_validator("time_budget")
    @classmethod
    def _check_budget(cls, value: Optional[str]) -> Optional[str]:
        parse_duration(value)
        return value

    @property
    def time_budget_seconds(self) -> Optional[float]:
        """The time budget in seconds (None when unlimited)."""
        return parse_duration(self.time_budget)


class LoraConfig(_Section):
    """Low-rank adapters (peft)."""

    enabled: bool = False
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    lr_multiplier: float = Field(
        1.0, gt=0, description="With LoRA on, train at train.lr x this (adapters want a higher lr than a full fine-tune)."
    )
    target_modules: Optional[list[str]] = Field(None, description="Module names to adapt (default: found automatically).")
    quantize_base: Optional[Literal["int8", "nf4"]] = Field(
        None, description="Quantize the frozen base: int8 (torchao weight-only, CPU/GPU) or nf4 (bitsandbytes, CUDA)."
    )


class GenerateConfig(_Section):
    """Sampling and decoding for ``llmtune generate`` (``--set generate.top_p=0.9`` or a recipe's ``generate:``)."""

    max_new_tokens: int = Field(
        256, ge=1, description="Tokens to generate per prompt (capped by the model's context minus the prompt)."
    )
    min_new_tokens: int = Field(0, ge=0, description="Generate at least this many tokens (eos is ignored until then).")
    temperature: float = Field(0.8, ge=0, description="Sampling temperature; 0 means greedy decoding.")
    top_k: int = Field(50, ge=0, description="Sample from the k most likely tokens only; 0 turns it off.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: the smallest set of tokens holding this mass.")
    repetition_penalty: float = Field(1.0, gt=0, description="Divide the scores of tokens already present (1 = off).")
    num_return_sequences: int = Field(1, ge=1, description="Completions per prompt (needs temperature > 0).")
    stop: list[str] = Field(default_factory=list, description="Stop strings: each output is cut at the first one.")
    seed: Optional[int] = Field(None, description="Seed for sampling (None: different samples each run).")
    prompt_column: str = Field("prompt", description="Field of a .jsonl prompt file that holds the prompt.")

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: list[str]) -> list[str]:
        if any(s == "" for s in value):
            raise ValueError("stop strings must not be empty")
        return value


class EvalConfig(_Section):
    """What ``llmtune eval`` measures beyond each task's defaults."""

    stride: Optional[int] = Field(
        None, gt=0, description="Causal LM eval: tokens the sliding window moves on (default: half of max_length)."
    )
    generate: bool = Field(
        False, description="Generation eval: also decode greedy responses and score exact match, ROUGE and BLEU."
    )


class ServeConfig(_Section):
    """The OpenAI-compatible HTTP server of ``llmtune serve`` (``--set serve.max_queue=128`` or a recipe's ``serve:``)."""

    host: str = Field("127.0.0.1", min_length=1,
                      description="Address to bind; 127.0.0.1 keeps the server local, 0.0.0.0 opens it to the network.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    api_key_env: Optional[str] = Field(
        None, min_length=1,
        description="Name of the environment variable holding the API key; requests must then send it as Bearer token.",
    )
    model_name: Optional[str] = Field(
        None, min_length=1, description="Model id clients pass and /v1/models lists (default: the model folder's name)."
    )
    max_batch_size: int = Field(8, ge=1, le=256, description="Sequences decoded together in one forward pass.")
    max_queue: int = Field(64, ge=1, description="Requests allowed to wait for a batch slot; more get HTTP 429.")
    default_max_tokens: int = Field(
        256, ge=1, description="New tokens when a request sets no max_tokens (capped by the context)."
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body; bigger ones get HTTP 413.")
    shutdown_timeout: float = Field(
        30.0, gt=0, description="Seconds SIGTERM/Ctrl-C waits for in-flight requests before closing them."
    )


class DistillConfig(_Section):
    """``llmtune distill``: learn from a teacher's output distribution (docs/distill-prune.md)."""

    teacher: Optional[str] = Field(None, description="The teacher: a model folder, llmtune run dir or hub id.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature T of both distributions (> 0).")
    alpha: float = Field(
        0.5, ge=0, le=1, description="Weight of the T^2-scaled KL term; 1 - alpha weighs the task loss (0..1)."
    )
    teacher_top_k: int = Field(
        64, ge=0, description="-t lm/generation: keep the teacher's top-k log-probs per token in memory (one teacher "
        "pass before training) and distil on them; 0: the full vocabulary, the teacher run live each step."
    )
    augment: int = Field(
        0, ge=0, description="Classification: masked copies of each training row added as a transfer set, labelled "
        "by the teacher alone (KL term only); 0: none."
    )
    augment_mask: float = Field(0.2, gt=0, le=1, description="Share of the words of a transfer-set copy that are masked.")
    transfer_data: Optional[str] = Field(
        None, description="Classification: unlabelled text (file, folder, hub id) added as a transfer set, labelled by "
        "the teacher alone (KL term only); its train split (or only split), any label column ignored."
    )
    transfer_column: Optional[str] = Field(
        None, description="Column of distill.transfer_data holding the text (None: 'text' or one of its usual "
        "aliases, e.g. 'sentence')."
    )


class PruneConfig(_Section):
    """``llmtune prune``: remove whole heads, FFN channels or layers by a measured importance score."""

    heads: float = Field(0.0, ge=0, lt=1, description="Fraction of attention heads to remove in every layer.")
    ffn: float = Field(0.0, ge=0, lt=1, description="Fraction of FFN channels to remove in every layer.")
    layers: int = Field(0, ge=0, description="Number of whole layers to remove.")
    calibration_samples: int = Field(64, gt=0, description="Rows of --dataset that importance is measured on.")
    recover_steps: int = Field(0, ge=0, description="Fine-tune steps after pruning (0: none).")
    recover_distill: bool = Field(
        False, description="Recover by distilling from the unpruned model (distill.temperature/alpha), not labels alone."
    )


DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
"""The pairwise losses of TRL's DPOTrainer (trl 1.16), ``dpo.loss_type``."""


class DpoConfig(_Section):
    """``finetune --task dpo``: preference tuning on TRL's DPOTrainer (docs/dpo.md)."""

    beta: float = Field(0.1, gt=0, description="How far the policy may move from the reference model (> 0; higher: less).")
    loss_type: Union[Literal[DPO_LOSS_TYPES], list[Literal[DPO_LOSS_TYPES]]] = Field(  # type: ignore[valid-type]
        "sigmoid", description="TRL's pairwise loss: sigmoid (DPO), ipo, hinge, robust, apo_zero, ... (docs/dpo.md), "
        "or a list summed with loss_weights, e.g. [sigmoid, sft]: DPO plus an SFT term on the chosen answers."
    )
    loss_weights: Optional[list[float]] = Field(
        None, description="One weight (>= 0) per dpo.loss_type entry (None: 1 each)."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Robust DPO / EXO: assumed share of flipped labels.")
    precompute_ref_log_probs: bool = Field(
        False, description="Score every pair with the reference model once before training (no reference in memory)."
    )
    max_prompt_length: Optional[int] = Field(
        None, gt=0, description="Cut longer prompts to their last N tokens (None: cut only when a pair is too long)."
    )

    @field_validator("loss_type")
    @classmethod
    def _check_losses(cls, value: Union[str, list[str]]) -> Union[str, list[str]]:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("must be one loss or a list of different losses, e.g. [sigmoid, sft]")
        return value

    @field_validator("loss_weights")
    @classmethod
    def _check_weights(cls, value: Optional[list[float]], info: Any) -> Optional[list[float]]:
        if value is None:
            return value
        losses = info.data.get("loss_type", "sigmoid")
        count = len(losses) if isinstance(losses, list) else 1
        if len(value) != count or any(w < 0 for w in value):
            raise ValueError(f"needs {count} weight(s) >= 0, one per dpo.loss_type entry ({losses}); got {value}")
        return value

    @property
    def losses(self) -> list[str]:
        """``loss_type`` as a list (TRL's form)."""
        return list(self.loss_type) if isinstance(self.loss_type, list) else [self.loss_type]


class RunConfig(_Section):
    """Everything one command needs; built by ``llmtune.config.load_config``."""

    command: Command = Field("finetune", description="The command this config is for.")
    task: Optional[str] = Field(None, description="Task plug-in: a name in llmtune.tasks.registry.TASKS.")
    description: str = Field("", description="One line shown by `llmtune recipes list`.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig, description="`llmtune data clean` stages and output.")
    dpo: DpoConfig = Field(default_factory=DpoConfig, description="`finetune --task dpo` (preference tuning).")
    distill: DistillConfig = Field(default_factory=DistillConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: Optional[str]) -> Optional[str]:
        # Checked against the registry at validation time, so a task registered later (a plug-in) is accepted.
        if value is not None and value not in TASKS:
            raise ValueError(f"unknown task {value!r}; choose one of: {', '.join(TASKS)}")
        return value


def combination_problems(cfg: RunConfig) -> list[str]:
    """Settings that are each valid but impossible together, as ``path: message`` strings."""
    problems: list[str] = []
    if cfg.command == "pretrain" and cfg.model.name_or_path and cfg.model.arch:
        problems.append("model.arch: pretrain builds from scratch with model.arch OR continues model.name_or_path, not both")
    finetune_tasks = tasks_for("finetune")
    choices = f"{', '.join(finetune_tasks[:-1])} or {finetune_tasks[-1]}"
    if cfg.command == "finetune" and cfg.task is None:
        problems.append(f"task: finetune needs a task ({choices}); pass --task")
    if cfg.command == "finetune" and cfg.task is not None and cfg.task not in finetune_tasks:
        users = "/".join(TASKS[cfg.task].commands)
        problems.append(f"task: '{cfg.task}' is for {users}; finetune takes {choices}")
    if cfg.lora.enabled and cfg.command == "pretrain":
        problems.append("lora.enabled: LoRA adapts a pretrained model; it cannot be used with pretrain")
    if cfg.lora.quantize_base and not cfg.lora.enabled:
        problems.append("lora.quantize_base: quantizes the frozen base of a LoRA run; add --lora")
    if cfg.train.warmup_steps and cfg.train.warmup_fraction:
        problems.append("train.warmup_steps: set warmup_steps or warmup_fraction, not both")
    if cfg.generate.num_return_sequences > 1 and cfg.generate.temperature == 0:
        problems.append("generate.num_return_sequences: greedy decoding (temperature 0) gives one completion; "
                        "set --temperature above 0 to sample several")
    if cfg.data.dataset is None and cfg.command in ("pretrain", "finetune", "eval", "data", "tokenizer", "clean"):
        problems.append("data.dataset: no training data given; pass --dataset PATH|HUB_ID|builtin:NAME")
    return problems
