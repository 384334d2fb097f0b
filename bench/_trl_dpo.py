"""The baseline of bench/dpo.py: a plain TRL DPO script, as a user would write it without llmtune.

    python bench/_trl_dpo.py MODEL_DIR DATA_JSONL OUT_DIR STEPS BATCH LR MAX_LENGTH

Prints one JSON line: ``{"train_runtime": s, "steps": n}``. Same model, data and settings as the llmtune
run in bench/dpo.py: fp32 on CPU, no gradient checkpointing, sigmoid loss with beta 0.1, a checkpoint at
the end (llmtune saves one too), no evaluation during training.
"""

from __future__ import annotations

import json
import sys

from common import offline_env

offline_env()


def main(model_dir: str, data: str, out: str, steps: str, batch: str, lr: str, max_length: str) -> None:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = load_dataset("json", data_files=data, split="train").remove_columns(["kind"])
    args = DPOConfig(output_dir=out, max_steps=int(steps), per_device_train_batch_size=int(batch),
                     learning_rate=float(lr), max_length=int(max_length), beta=0.1, loss_type=["sigmoid"],
                     gradient_checkpointing=False, bf16=False, use_cpu=not torch.cuda.is_available(),
                     logging_steps=10, save_strategy="steps", save_steps=int(steps), report_to=[], seed=42,
                     disable_tqdm=True, dataloader_pin_memory=False)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    metrics = trainer.train().metrics
    print(json.dumps({"train_runtime": metrics["train_runtime"], "steps": trainer.state.global_step}))


if __name__ == "__main__":
    main(*sys.argv[1:8])
