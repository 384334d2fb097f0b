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
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from llmtune.errors import ConfigError, DataError, ModelError
from llmtune.dist import log

if TYPE_CHECKING:
    from llmtune.config.schema import GenerateConfig, RunConfig

# A tokenizer without a real limit reports a huge sentinel (int(1e30)) as model_max_length.
_NO_LIMIT = 10**8
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


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


def context_length(config: Any, tokenizer: Any = None) -> Optional[int]:
    """The longest sequence the model takes: its position table, or the tokenizer's limit if lower.

    Returns:
        Tokens, or None when neither states a limit.
    """
    limits = [v for v in (getattr(config, key, None) for key in _POSITION_KEYS) if isinstance(v, int) and v > 0][:1]
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < _NO_LIMIT:
        limits.append(tok_limit)
    return min(limits) if limits else None


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


def load_for_generation(cfg: "RunConfig", check_prompts: Optional[Sequence[str]] = None) -> tuple[Any, Any]:
    """Load ``cfg.model``'s causal LM (eval mode, on the GPU when there is one) and its tokenizer.

    Args:
        cfg: ``model.name_or_path`` (a HF folder, run dir, peft adapter folder or hub id),
            ``model.tokenizer``, ``model.trust_remote_code``/``allow_pickle``, ``train.precision``.
        check_prompts: Prompts to check against the model's context before the weights load.

    Raises:
        ConfigError: No model given.
        ModelError: No weights, no tokenizer, a bad adapter, or any load failure.
        DataError: A prompt longer than the context.
    """
    from llmtune.modeling import load_pretrained, resolve_model_path

    if not cfg.model.name_or_path:
        raise ConfigError("no model given; pass --model with a folder from llmtune pretrain/finetune, "
                          "a Hugging Face model folder or a hub id")
    base, adapter = split_adapter(cfg.model.name_or_path)
    model_path = resolve_model_path(base)
    check_weights(model_path)
    tokenizer = load_generation_tokenizer(cfg.model.tokenizer or _tokenizer_source(adapter, model_path),
                                          cfg.model.trust_remote_code)
    options = {"trust_remote_code": cfg.model.trust_remote_code}
    config = load_pretrained(model_path, "AutoConfig", **options)
    if check_prompts:
        check_prompt_lengths(tokenizer, check_prompts, context_length(config, tokenizer))
    device, dtype = _device_and_dtype(cfg.train.precision)
    from llmtune.runs.finetune import quiet_transformers  # one way to hide load tables and progress bars

    with quiet_transformers():
        model = load_pretrained(model_path, "AutoModelForCausalLM", allow_pickle=cfg.model.allow_pickle,
                                dtype=dtype, **options)
        if adapter is not None:
            model = _merge_adapter(model, adapter)
    return model.to(device).eval(), tokenizer


def split_adapter(name: str) -> tuple[str, Optional[Path]]:
    """``(base model, adapter folder)`` for a bare peft adapter folder, else ``(name, None)``.

    A bare adapter folder holds ``adapter_config.json`` but no ``config.json``; its base model is the
    ``base_model_name_or_path`` it names. (llmtune LoRA run dirs also hold a merged model at their
    top, which loads as is.)
    """
    path = Path(name).expanduser()
    config_file = path / "adapter_config.json"
    if not config_file.is_file() or (path / "config.json").is_file():
        return name, None
    try:
        adapter_cfg = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {config_file}: {exc}; re-save the adapter with save_pretrained") from None
    base = adapter_cfg.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{config_file} names no base_model_name_or_path; set it to the base model's folder or hub id")
    task = adapter_cfg.get("task_type")
    if task not in (None, "CAUSAL_LM"):
        raise ModelError(f"the adapter in {path} was trained for {task}, not text generation (CAUSAL_LM)")
    return base, path


def check_weights(model_path: str) -> None:
    """Raise ModelError when a local model folder holds no weight files."""
    from llmtune.modeling import pickled_weights

    folder = Path(model_path)
    if folder.is_dir() and not any(folder.glob("*.safetensors")) and not pickled_weights(folder):
        raise ModelError(f"{model_path} holds no model weights (model.safetensors); pass a folder written by "
                         "save_pretrained or a finished llmtune run dir")


def _tokenizer_source(adapter: Optional[Path], model_path: str) -> str:
    """The adapter's own tokenizer when it saved one (llmtune does), else the base model's."""
    from llmtune.tokenizer import TOKENIZER_FILES

    if adapter is not None and any((adapter / f).is_file() for f in TOKENIZER_FILES):
        return str(adapter)
    return model_path


def load_generation_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer at ``path``, padding with eos when it has no pad token."""
    from llmtune.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _device_and_dtype(precision: str) -> tuple[str, Any]:
    """``("cuda", bf16/fp16)`` on a GPU, ``("cpu", fp32)`` otherwise (``train.precision`` decides)."""
    import torch

    from llmtune.modeling import detect_device, resolve_precision

    device = detect_device()
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    return ("cuda" if device["cuda"] else "cpu"), dtypes[resolve_precision(precision, device)]


def _merge_adapter(model: Any, adapter: Path) -> Any:
    """Apply the peft adapter in ``adapter`` and merge it into the weights (no LoRA cost per token)."""
    try:
        from peft import PeftModel
    except ImportError:
        raise ModelError(f"{adapter} is a LoRA adapter, which needs peft: pip install peft") from None
    try:
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"could not apply the adapter in {adapter}: {first}") from exc
    log(f"applied the LoRA adapter in {adapter} (merged into the base model)")
    return merged
