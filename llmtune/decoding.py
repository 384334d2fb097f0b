"""Pieces of text generation that ``runs/generate.py`` sequences: loading, limits, streaming, stop strings.

* ``load_for_generation``: a causal LM and its tokenizer from a HF folder, an llmtune run dir or a
  bare peft adapter folder (its base model is loaded and the adapter merged in), with every problem
  (no weights, no tokenizer, a prompt longer than the context) reported before the weights load.
* ``context_length`` / ``cap_new_tokens``: generating past the model's positions crashes, so the
  number of new tokens is capped to what fits (with a warning line).
* ``TokenStream``: a ``generate`` streamer (the ``put``/``end`` protocol of transformers' streamers)
  that times the first new token and, given a writer, decodes and writes text as tokens arrive.
* ``StopWriter`` / ``cut_at_stop``: output ends right before the first stop string; while streaming,
  the last few characters are held back until they cannot be the start of a stop string.
* ``ensure_eos_stop`` / ``check_chat_template``: guards against a model that never stops talking
  (``generate`` and ``export`` run them): the tokenizer's eos is added to ``generation_config`` when
  missing, and a tokenizer whose chat template is not the one the model was trained with is given
  that template (it had none) or refused (it has another).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from llmtune.dist import log
from llmtune.errors import ConfigError, DataError, ModelError
from llmtune.modeling import context_length

if TYPE_CHECKING:
    from llmtune.config.schema import GenerateConfig, RunConfig


@dataclass
class GenerateStats:
    """Timing of one or more ``generate`` calls (what the command prints at the end)."""

    completions: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: Optional[float] = None
    capped: bool = False

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second of generation (0.0 before any)."""
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def record(self, stream: "TokenStream", new_tokens: int) -> None:
        """Add one ``generate`` call timed by ``stream`` that produced ``new_tokens``."""
        self.new_tokens += new_tokens
        self.seconds += stream.elapsed
        if self.first_token_seconds is None:
            self.first_token_seconds = stream.first_token_seconds

    def merge(self, other: "GenerateStats") -> None:
        """Add ``other``'s calls to these."""
        self.completions += other.completions
        self.new_tokens += other.new_tokens
        self.seconds += other.seconds
        self.capped = self.capped or other.capped
        if self.first_token_seconds is None:
            self.first_token_seconds = other.first_token_seconds

    def summary(self) -> str:
        """One line: completions, tokens, tokens/s and time to first token."""
        first = f"; first token after {1000 * self.first_token_seconds:.0f} ms" if self.first_token_seconds else ""
        plural = "s" if self.completions != 1 else ""
        return (f"{self.completions} completion{plural}, {self.new_tokens} new tokens in {self.seconds:.2f} s: "
                f"{self.tokens_per_second:.1f} tokens/s{first}")


class TokenStream:
    """A streamer for ``model.generate``: times the first new token, optionally writes decoded text.

    ``generate`` calls ``put`` with the prompt ids first, then with each step's new tokens, and ``end``
    when done. With ``write`` (batch size 1 only) the new text is written as soon as it decodes to
    whole characters (a byte-level token may hold half a UTF-8 character).
    """

    def __init__(self, tokenizer: Any = None, write: Optional[Callable[[str], None]] = None) -> None:
        self.tokenizer, self.write = tokenizer, write
        self.started = time.perf_counter()
        self.first_token_at: Optional[float] = None
        self.ended_at: Optional[float] = None
        self._prompt_seen = False
        self._cache: list[int] = []
        self._printed = 0

    @property
    def first_token_seconds(self) -> Optional[float]:
        """Seconds from creation to the first new token (None when none came)."""
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def elapsed(self) -> float:
        """Seconds from creation to ``end`` (or to now, before it)."""
        return (self.ended_at or time.perf_counter()) - self.started

    def put(self, value: Any) -> None:
        """Receive the prompt (first call) or one step's new tokens."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if self.write is not None:
            self._cache.extend(value.reshape(-1).tolist())
            self._flush(final=False)

    def end(self) -> None:
        """Generation finished: write what is left."""
        self.ended_at = time.perf_counter()
        if self.write is not None:
            self._flush(final=True)

    def _flush(self, final: bool) -> None:
        text = self.tokenizer.decode(self._cache, skip_special_tokens=True)
        if text.endswith("\ufffd") and not final:
            return  # an incomplete character: wait for its remaining bytes
        self.write(text[self._printed:])
        self._printed = len(text)
        if text.endswith("\n"):  # decoding restarts here, so each step decodes a short list
            self._cache, self._printed = [], 0


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to (not including) the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)


class StopWriter:
    """Writes streamed text, ending right before the first stop string.

    The last ``len(longest stop) - 1`` characters are held back until more text shows they do not
    begin a stop string, so a stop string split across tokens is never half-printed.
    """

    def __init__(self, write: Callable[[str], None], stops: Sequence[str]) -> None:
        self._out, self.stops = write, [s for s in stops if s]
        self._keep = max((len(s) for s in self.stops), default=1) - 1
        self._pending = ""
        self.text = ""  # everything written so far
        self.stopped = False

    def write(self, piece: str) -> None:
        """Take the next piece of text."""
        if self.stopped:
            return
        self._pending += piece
        cut, self.stopped = cut_at_stop(self._pending, self.stops)
        if self.stopped:
            self._pending = ""
            self._emit(cut)
        elif len(self._pending) > self._keep:
            safe = len(self._pending) - self._keep
            text, self._pending = self._pending[:safe], self._pending[safe:]
            self._emit(text)

    def close(self) -> None:
        """The stream ended: write what was held back."""
        if not self.stopped:
            text, self._pending = self._pending, ""
            self._emit(text)

    def _emit(self, text: str) -> None:
        if text:
            self.text += text
            self._out(text)


def cap_new_tokens(wanted: int, prompt_len: int, context: Optional[int], warn: bool = True) -> int:
    """``wanted`` new tokens, capped so prompt + completion fit ``context`` (a warning line when capped).

    Raises:
        DataError: The prompt leaves no room at all.
    """
    if context is None:
        return wanted
    room = context - prompt_len
    if room < 1:
        raise DataError(f"the prompt is {prompt_len} tokens, which leaves no room in the model's {context}-token "
                        "context; shorten it")
    if wanted > room and warn:
        log(f"warning: max_new_tokens {wanted} capped to {room}: the model's context is {context} tokens "
            f"and the prompt takes {prompt_len}")
    return min(wanted, room)


def check_prompt_lengths(tokenizer: Any, prompts: Sequence[str], context: Optional[int]) -> None:
    """Raise DataError for the first prompt that does not leave room for one new token."""
    if context is None:
        return
    for i, prompt in enumerate(prompts):
        n = len(tokenizer(prompt)["input_ids"])
        if n >= context:
            which = "the prompt" if len(prompts) == 1 else f"prompt {i + 1} of {len(prompts)}"
            raise DataError(f"{which} is {n} tokens, but the model's context is {context} tokens; shorten it "
                            f"to at most {context - 1} tokens")


def left_pad(seqs: Sequence[Sequence[int]], pad_id: Optional[int]) -> tuple[Any, Any]:
    """Left-pad token lists into ``(input_ids, attention_mask)`` tensors (new tokens then share a column)."""
    import torch

    width = max(len(s) for s in seqs)
    if pad_id is None and any(len(s) < width for s in seqs):
        raise ModelError("the tokenizer has neither a pad nor an eos token, so prompts cannot be batched; "
                         "pass --batch-size 1")
    ids = [[pad_id] * (width - len(s)) + list(s) for s in seqs]
    mask = [[0] * (width - len(s)) + [1] * len(s) for s in seqs]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def generation_config(model: Any, tokenizer: Any, g: "GenerateConfig", n_new: int, stops: Sequence[str]) -> Any:
    """The model's own ``GenerationConfig`` (eos ids ...) with ``g``'s sampling settings applied.

    Greedy decoding (temperature 0) clears the sampling fields a hub model's config may set, so
    transformers does not warn that they are ignored.
    """
    import copy

    config = copy.deepcopy(model.generation_config)
    sampling = g.temperature > 0
    config.update(
        max_new_tokens=n_new, max_length=None, min_new_tokens=min(g.min_new_tokens, n_new) or None,
        do_sample=sampling, temperature=g.temperature if sampling else None,
        top_k=g.top_k if sampling else None, top_p=g.top_p if sampling else None,
        repetition_penalty=g.repetition_penalty, num_return_sequences=g.num_return_sequences,
        pad_token_id=tokenizer.pad_token_id, stop_strings=list(stops) or None,
    )
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    return config


def stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a generation: the model's ``generation_config`` eos ids and the tokenizer's eos."""
    config = getattr(model, "generation_config", None)
    ids = getattr(config, "eos_token_id", None) if config is not None else None
    found = set([ids] if isinstance(ids, int) else (ids or []))
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return found


def count_new_tokens(row: Sequence[int], stops: set[int], pad_id: Optional[int]) -> int:
    """Tokens a sequence really generated: through its first stop id (eos), or without the padding after a stop."""
    for i, token in enumerate(row):
        if token in stops:
            return i + 1
    n = len(row)
    while n and row[n - 1] == pad_id:
        n -= 1
    return n


def ensure_eos_stop(config: Any, tokenizer: Any, where: str) -> bool:
    """Add the tokenizer's eos to ``config.eos_token_id`` (a ``GenerationConfig``) when it is not there.

    A model trained on responses ending with eos stops only if ``generate`` knows that id; a
    ``generation_config`` from a base model (or none) may name another one. One log line on a fix.

    Returns:
        True when ``config`` was changed.
    """
    eos = tokenizer.eos_token_id
    if config is None or eos is None:
        return False
    stops = config.eos_token_id
    stops = [] if stops is None else ([stops] if isinstance(stops, int) else list(stops))
    if eos in stops:
        return False
    config.eos_token_id = [*stops, eos] if stops else eos
    log(f"{where}: generation stops at the tokenizer's eos {tokenizer.eos_token!r} too (added to generation_config)")
    return True


def trained_chat_template(folder: Any) -> Optional[str]:
    """The chat template of the tokenizer saved in ``folder`` (a run dir, adapter or model folder), or None."""
    from pathlib import Path

    from llmtune.tokenizer import TOKENIZER_FILES, load_tokenizer

    path = Path(str(folder))
    if not path.is_dir() or not any((path / name).is_file() for name in TOKENIZER_FILES):
        return None
    return getattr(load_tokenizer(str(path)), "chat_template", None)


def check_chat_template(tokenizer: Any, trained: Optional[str], trained_in: str, where: str) -> bool:
    """Make ``tokenizer`` carry the chat template the model was trained with (``trained``, saved in ``trained_in``).

    A tokenizer without a template gets the trained one (one log line); one with another template is
    refused: prompts rendered with it are not what the model learned to answer, nor to end with eos.

    Returns:
        True when the tokenizer was given the trained template.

    Raises:
        ModelError: The tokenizer has a chat template other than the trained one.
    """
    current = getattr(tokenizer, "chat_template", None)
    if not trained or current == trained:
        return False
    if current:
        raise ModelError(f"{where}: the tokenizer's chat template differs from the one the model was trained with "
                         f"(saved in {trained_in}); use that tokenizer (drop --set model.tokenizer=...)")
    tokenizer.chat_template = trained
    log(f"{where}: the tokenizer had no chat template; using the one the model was trained with ({trained_in})")
    return True


def load_for_generation(cfg: "RunConfig", check_prompts: Optional[Sequence[str]] = None) -> tuple[Any, Any]:
    """Load ``cfg.model``'s causal LM (eval mode, on the GPU when there is one) and its tokenizer.

    Args:
        cfg: ``model.name_or_path`` (a HF folder, run dir, peft adapter folder or hub id),
            ``model.tokenizer``, ``model.trust_remote_code``/``allow_pickle``, ``train.precision``.
        check_prompts: Prompts to check against the model's context before the weights load.

    Raises:
        ConfigError: No model given.
        ModelError: No weights, no trained causal LM head (an encoder such as BERT), no tokenizer, a bad adapter,
            or any load failure.
        DataError: A prompt longer than the context.
    """
    from llmtune.adapters import merge_into, split_adapter, tokenizer_source
    from llmtune.compress import refuse_generation
    from llmtune.modeling import (check_head, check_weights, load_pretrained, model_tokenizer, quiet_transformers,
                                  resolve_model_path)

    if not cfg.model.name_or_path:
        raise ConfigError("no model given; pass --model with a folder from llmtune pretrain/finetune, "
                          "a Hugging Face model folder or a hub id")
    base, adapter = split_adapter(cfg.model.name_or_path)
    model_path = resolve_model_path(base)
    check_weights(model_path)
    options = {"trust_remote_code": cfg.model.trust_remote_code}
    config = load_pretrained(model_path, "AutoConfig", **options)
    check_head([str(a) for a in getattr(config, "architectures", None) or []], "generation", base, "generate with")
    refuse_generation(model_path)  # an ONNX causal LM exported without its key/value cache
    own = tokenizer_source(adapter, model_path)
    tokenizer = model_tokenizer(cfg, model_path, source=own, for_batches=False)
    if cfg.model.tokenizer:  # another tokenizer than the one saved with the model
        check_chat_template(tokenizer, trained_chat_template(own), own, "generate")
    if check_prompts:
        check_prompt_lengths(tokenizer, check_prompts, context_length(config, tokenizer))
    device, dtype = _device_and_dtype(cfg.train.precision)
    with quiet_transformers():
        model = load_pretrained(model_path, "AutoModelForCausalLM", allow_pickle=cfg.model.allow_pickle,
                                dtype=dtype, **options)
        if adapter is not None:
            model = merge_into(model, adapter)
            log(f"applied the LoRA adapter in {adapter} (merged into the base model)")
    ensure_eos_stop(getattr(model, "generation_config", None), tokenizer, "generate")
    return model.to(device).eval(), tokenizer


def _device_and_dtype(precision: str) -> tuple[str, Any]:
    """``("cuda", bf16/fp16)`` on a GPU, ``("cpu", fp32)`` otherwise (``train.precision`` decides)."""
    import torch

    from llmtune.modeling import detect_device, resolve_precision

    device = detect_device()
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    return ("cuda" if device["cuda"] else "cpu"), dtypes[resolve_precision(precision, device)]


def run_generate(model: Any, tokenizer: Any, seqs: list[list[int]], g: GenerateConfig, n_new: int,
                  streamer: Any, stops: Sequence[str]) -> Any:
    """``model.generate`` on left-padded ``seqs``; returns only the new tokens, ``(len(seqs) * n, n_new')``."""
    import torch

    input_ids, mask = left_pad(seqs, tokenizer.pad_token_id)
    config = generation_config(model, tokenizer, g, n_new, stops)
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                             generation_config=config, streamer=streamer,
                             tokenizer=tokenizer if stops else None)
    return out[:, input_ids.shape[1]:].cpu()


def generate_records(model: Any, tokenizer: Any, prompts: list[str], g: GenerateConfig,
                     batch_size: int) -> tuple[list[dict[str, Any]], GenerateStats]:
    """Completions for many prompts, batched by similar length, as records in input order.

    Prompts are sorted longest first (a batch too big for memory fails at once, not at the end) and
    left-padded, so every row's new tokens start at the same column.

    Returns:
        ``{"prompt", "completion"}`` per completion (plus ``"index"`` when n > 1), and the timing.
    """
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    context = context_length(model.config, tokenizer)
    n = g.num_return_sequences
    texts: dict[int, list[str]] = {}
    stats = GenerateStats(completions=len(prompts) * n)
    stops = stop_ids(model, tokenizer)
    for batch in _progress(batches):
        seqs = [encoded[i] for i in batch]
        n_new = cap_new_tokens(g.max_new_tokens, max(map(len, seqs)), context, warn=not stats.capped)
        stats.capped = stats.capped or n_new < g.max_new_tokens
        streamer = TokenStream()  # times the first token only
        out = run_generate(model, tokenizer, seqs, g, n_new, streamer, g.stop).tolist()
        stats.record(streamer, sum(count_new_tokens(row, stops, tokenizer.pad_token_id) for row in out))
        for k, i in enumerate(batch):
            rows = out[k * n:(k + 1) * n]
            texts[i] = [cut_at_stop(tokenizer.decode(r, skip_special_tokens=True), g.stop)[0] for r in rows]
    records = []
    for i, prompt in enumerate(prompts):
        for j, text in enumerate(texts[i]):
            records.append({"prompt": prompt, "completion": text, **({"index": j} if n > 1 else {})})
    return records, stats


def _progress(batches: list[Any]) -> Any:
    """Iterate ``batches`` with a progress bar on stderr (none for a single batch)."""
    if len(batches) < 2:
        return batches
    from rich.console import Console
    from rich.progress import track

    console = Console(stderr=True)  # a bar only where someone watches: not in logs or pipes
    return track(batches, description="generating", console=console, transient=True, disable=not console.is_terminal)
