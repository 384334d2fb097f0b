"""``LlmtuneDPOTrainer``: TRL's ``DPOTrainer`` with llmtune's Trainer behaviour around it.

``LlmtuneTrainer`` overrides only methods that call ``super()``, so it works as a mixin: in
``class LlmtuneDPOTrainer(LlmtuneTrainer, DPOTrainer)`` the method order is LlmtuneDPOTrainer ->
LlmtuneTrainer -> DPOTrainer -> transformers.Trainer. llmtune's graceful stop, complete-checkpoint
marking, non-finite guard and samplers wrap TRL's loss, logging and checkpoint model card; the
engine adds its callbacks (metrics.jsonl, progress, time budget) to TRL's trainer as to any other.

This module imports TRL at the top: import it only when training a DPO run.
"""

from __future__ import annotations

import warnings
from typing import Any

from trl import DPOConfig, DPOTrainer

from llmtune.engine.trainer import LlmtuneTrainer

PREFERENCE_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")

# TRL 1.16 asks transformers 5 for `is_gradient_checkpointing` around every reference pass, which warns each
# time that the name is deprecated: nothing for the user to act on.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


class LlmtuneDPOTrainer(LlmtuneTrainer, DPOTrainer):
    """TRL's DPO trainer on llmtune's pre-tokenized pairs (``tasks/preference_data.py``).

    The private methods overridden below were checked against trl 1.16.0; ``tests/unit/test_dpo_data.py``
    fails when one disappears or its parameters change.
    """

    args_class = DPOConfig  # the engine builds the trainer's arguments with this class

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Given a peft model, TRL copies its adapter as a frozen "ref" adapter (for re-training a pretrained
        # adapter). llmtune's LoRA adapters are new (B = 0), so the base model with adapters disabled is the
        # starting model: drop the copy, and TRL then disables the adapters for the reference pass.
        model = self.accelerator.unwrap_model(self.model)
        if "ref" in (getattr(model, "peft_config", None) or {}):
            model.delete_adapter("ref")

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """No TRL model card: llmtune writes the run dir's README.md itself."""

    # Private override (trl 1.16.0): DPOTrainer.__init__ calls _prepare_dataset(dataset, processing_class, args,
    # dataset_name) on the train and eval sets to extract prompts, add eos and tokenize. llmtune's task has
    # done all of that (with its checks and prompt-first truncation) before the model loaded.
    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        if set(PREFERENCE_COLUMNS) <= set(getattr(dataset, "column_names", None) or ()):
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    # Private override (trl 1.16.0): _BaseTrainer.__init__ calls _send_telemetry() to report usage to the
    # Hugging Face Hub. llmtune runs offline-first and sends nothing anywhere.
    def _send_telemetry(self) -> None:
        return None
