"""Sample generations while a causal LM trains: what the model writes says more than its loss.

At each evaluation ``SampleCallback`` continues a few fixed prompts greedily (deterministic, and it
does not touch the random state that drives data order and dropout, so resumed runs stay
reproducible), prints the results and appends them to ``RUN_DIR/samples.jsonl``, one line each::

    {"step": 200, "prompt": "Once upon a time", "completion": " there was a little dog ...", "stopped": false}

``stopped`` says whether the model ended the completion itself (an eos token) before the token limit:
what a fine-tuned chat or instruction model must learn.

Only the main process generates. Generation runs on the unwrapped model on that process alone, which
suits single-device and DDP training; sharded setups (FSDP, DeepSpeed ZeRO-3) would need every rank.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from transformers import TrainerCallback

from llmtune.decoding import stop_ids
from llmtune.modeling import context_length

SAMPLES_FILE = "samples.jsonl"
"""Where a run dir keeps its sample generations, relative to the run dir."""

PROMPT_TOKENS = 8
NEW_TOKENS = 40


def sample_prompt(input_ids: Sequence[int], tokenizer: Any, n_tokens: int = PROMPT_TOKENS) -> list[int]:
    """The opening tokens of the first document of a packed block, ending before a word starts.

    Args:
        input_ids: A packed block (block 0 of a split starts at the start of its first document).
        tokenizer: Gives the document separator (eos), which the prompt never crosses, and decodes
            tokens to find word starts (a token decoding to a leading space or newline).
        n_tokens: At most this many tokens.

    Returns:
        Up to ``n_tokens`` token ids (at least one when ``input_ids`` is not empty). When no word
        start is found (e.g. tokenizers that decode single tokens without their space), the first
        ``n_tokens``.
    """
    ids = list(input_ids)
    stop = tokenizer.eos_token_id
    if stop is not None and stop in ids[1:]:
        ids = ids[: ids.index(stop, 1)]
    n_tokens = max(1, n_tokens)
    # Cutting mid-word ("walks" -> "wal") makes the continuation about spelling, not about text.
    for cut in range(min(n_tokens, len(ids) - 1), 0, -1):
        if tokenizer.decode([ids[cut]]).startswith((" ", "\n")):
            return ids[:cut]
    return ids[:n_tokens]


def max_new_tokens(config: Any, prompt_len: int, wanted: int = NEW_TOKENS) -> int:
    """Cap ``wanted`` so prompt + completion fit the model's positions (past them generation crashes)."""
    positions = context_length(config)
    if not positions:
        return wanted
    return max(0, min(wanted, positions - prompt_len))


def generate_greedy(model: Any, prompt_ids: list[int], n_new: int, pad_id: Optional[int]) -> list[int]:
    """Greedy continuation of ``prompt_ids`` (stops early at eos); the model's train/eval mode is kept."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ids = torch.tensor([prompt_ids], device=model.device)
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new, do_sample=False, pad_token_id=pad_id
            )
    finally:
        model.train(was_training)
    return out[0, len(prompt_ids):].tolist()


class SampleCallback(TrainerCallback):
    """At each evaluation, continue fixed prompts greedily; print them and append them to a JSON-lines file."""

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int] | Sequence[Sequence[int]],
                 path: Optional[str | Path] = None, *, new_tokens: int = NEW_TOKENS,
                 stream: Optional[TextIO] = None) -> None:
        """Args:
        tokenizer: Decodes prompts and completions.
        prompt_ids: One prompt (see ``sample_prompt``) or a list of prompts; none may be empty.
        path: The ``.jsonl`` file to append to (default: ``SAMPLES_FILE`` in the Trainer's output dir,
            which is the run dir).
        new_tokens: Tokens to generate, capped by the model's positions.
        stream: Where to print (default: ``sys.stderr`` at the time of printing).
        """
        prompts = [list(prompt_ids)] if prompt_ids and isinstance(prompt_ids[0], int) else [list(p) for p in prompt_ids]
        assert prompts and all(prompts), "a sample needs a prompt"
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.path = Path(path) if path is not None else None
        self.new_tokens = new_tokens
        self.stream = stream
        self._last_step = -1

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        # The same step can be evaluated twice (e.g. an epoch end right after a step evaluation).
        if not state.is_world_process_zero or model is None or state.global_step == self._last_step:
            return
        self._last_step = state.global_step
        path = self.path or Path(args.output_dir) / SAMPLES_FILE
        records = [r for r in (self._sample(model, p, state.global_step) for p in self.prompts) if r is not None]
        if not records:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        for record in records:
            shown = (record["prompt"] + " ▸" + record["completion"]).replace("\n", "\\n")
            print(f"sample at step {state.global_step}: {shown}", file=self.stream or sys.stderr, flush=True)

    def _sample(self, model: Any, prompt_ids: list[int], step: int) -> Optional[dict[str, Any]]:
        n_new = max_new_tokens(model.config, len(prompt_ids), self.new_tokens)
        if n_new == 0:
            return None
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        completion_ids = generate_greedy(model, prompt_ids, n_new, pad)
        return {
            "step": step,
            "prompt": self.tokenizer.decode(prompt_ids),
            "completion": self.tokenizer.decode(completion_ids, skip_special_tokens=True),
            "stopped": bool(completion_ids) and completion_ids[-1] in stop_ids(model, self.tokenizer),
        }
