"""ONNX Runtime sessions behind transformers-style models: ``OrtModel`` and ``OrtCausalLM``.

An ONNX folder (``llmtune export --format onnx``) loads as an ``nn.Module`` whose ``forward`` takes the
usual tensors (``input_ids``, ``attention_mask``, ``token_type_ids``, labels) and returns the usual
outputs (``logits``, or ``start_logits``/``end_logits`` for question answering, with a loss when labels
are given), so ``llmtune eval`` scores it through the same ``Trainer.predict`` path as a PyTorch model.
The session runs on the CPU; one frozen placeholder parameter lets the Trainer move and inspect the
module as it does any model.

A causal LM exported with its key/value cache (``compression.json`` says ``"kv_cache": true``) loads
as ``OrtCausalLM``, a ``PreTrainedModel`` + ``GenerationMixin``: its graph takes ``input_ids``,
``attention_mask``, ``position_ids`` and ``past_key_values.{i}.key|value`` and returns ``logits`` and
``present.{i}.key|value``; ``forward`` reads the past from a transformers ``DynamicCache`` (zero-length
for a prefill) and appends the new positions to it, so ``generate`` and ``llmtune serve``'s batch engine
drive it exactly as they drive the PyTorch model. Older causal-LM folders (no cache in the graph) score
text only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch  # this module is imported only when an ONNX folder loads
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel

from llmtune.compress.base import ONNX_FILE, read_record, require
from llmtune.errors import ModelError

HEADS = {"ForSequenceClassification": ("classification", ("logits",)),
         "ForQuestionAnswering": ("qa", ("start_logits", "end_logits")),
         "ForCausalLM": ("causal_lm", ("logits",)), "LMHeadModel": ("causal_lm", ("logits",))}
"""Architecture suffix -> (head, ONNX output names) of the heads llmtune exports to ONNX."""
KV_CACHE = "kv_cache"
"""``compression.json`` key: true when a causal LM's graph takes and returns the key/value cache."""
PAST, PRESENT = "past_key_values.{}.{}", "present.{}.{}"
"""Graph input / output names of layer ``i``'s ``key`` or ``value`` cache."""
_AUTO_HEADS = {"AutoModelForSequenceClassification": "classification", "AutoModelForQuestionAnswering": "qa",
               "AutoModelForCausalLM": "causal_lm"}


def head_of(architecture: str) -> str | None:
    """``classification``, ``qa`` or ``causal_lm`` for an architecture name, or None when not exportable."""
    for suffix, (head, _) in HEADS.items():
        if architecture.endswith(suffix):
            return head
    return None


def load_onnx_model(folder: Path, cls_name: str, kwargs: dict[str, Any]) -> Any:
    """An ``OrtModel`` for the ONNX folder (``(model, {})`` when ``output_loading_info`` is asked).

    Raises:
        ModelError: The folder's head is not the one asked for (e.g. a classifier loaded as a causal LM).
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(folder))
    architecture = (getattr(config, "architectures", None) or ["?"])[0]
    head = head_of(architecture)
    wanted = _AUTO_HEADS.get(cls_name) or head_of(cls_name)
    if head is None or (wanted is not None and wanted != head):
        raise ModelError(f"{folder} is an ONNX export of a {architecture}, which cannot run as {cls_name}; "
                         "pass the task its head was trained for")
    cached = head == "causal_lm" and (read_record(folder) or {}).get(KV_CACHE)
    model = OrtCausalLM(folder, config) if cached else OrtModel(folder, config, head)
    return (model, {}) if kwargs.get("output_loading_info") else model


class OrtModel(torch.nn.Module):
    """An ONNX Runtime session with a transformers-style ``forward`` (see the module docstring)."""

    main_input_name = "input_ids"

    def __init__(self, folder: Path, config: Any, head: str) -> None:
        super().__init__()
        self.config, self.head, self.folder = config, head, Path(folder)
        self.session = _session(self.folder)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None, labels: Any = None,
                start_positions: Any = None, end_positions: Any = None, **_: Any) -> Any:
        """Run the session; returns a transformers output (loss, logits...) as the PyTorch model would."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask if attention_mask is not None
                 else torch.ones_like(input_ids),
                 "token_type_ids": token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)}
        arrays = self.session.run(None, {n: feeds[n].detach().cpu().numpy() for n in self.input_names})
        outputs = {name: torch.from_numpy(a).to(input_ids.device) for name, a in zip(self.output_names, arrays)}
        return self._output(outputs, labels, start_positions, end_positions)

    def _output(self, outputs: dict[str, Any], labels: Any, start: Any, end: Any) -> Any:
        from transformers.modeling_outputs import (
            CausalLMOutput,
            QuestionAnsweringModelOutput,
            SequenceClassifierOutput,
        )

        if self.head == "qa":
            loss = _qa_loss(outputs["start_logits"], outputs["end_logits"], start, end)
            return QuestionAnsweringModelOutput(loss=loss, **outputs)
        if self.head == "causal_lm":
            return CausalLMOutput(loss=_lm_loss(outputs["logits"], labels), logits=outputs["logits"])
        return SequenceClassifierOutput(loss=_classification_loss(outputs["logits"], labels, self.config),
                                        logits=outputs["logits"])

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Graphs without a key/value cache (classifiers, causal LMs exported before the cache) do not generate."""
        raise ModelError(f"{self.folder} is an ONNX export without a key/value cache: it scores text (llmtune eval) "
                         "but does not generate; re-export the PyTorch model with this version of llmtune export "
                         "--format onnx")


def _session(folder: Path) -> Any:
    """An ONNX Runtime CPU session of ``folder``'s graph, warnings off, with PyTorch's intra-op thread count.

    ``torch.set_num_threads`` (or ``OMP_NUM_THREADS``) before loading sets the threads of both, so PyTorch and
    ONNX folders are compared on the same cores.
    """
    ort = require("onnxruntime", f"the ONNX model in {folder}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = torch.get_num_threads()  # one thread budget for PyTorch and ONNX Runtime
    return ort.InferenceSession(str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])


class OrtCausalLM(PreTrainedModel, GenerationMixin):
    """A causal-LM graph with a key/value cache as a transformers model (see the module docstring).

    The graph's CPU session does the work; ``device`` is always the CPU, so ``generate`` and the serve
    engine build their inputs there, whatever ``.to()`` did to the placeholder parameter.
    """

    main_input_name = "input_ids"
    _supports_sdpa = True  # never used (the graph attends); keeps the saved config's attention setting valid

    def __init__(self, folder: Path, config: Any) -> None:
        import copy

        super().__init__(copy.deepcopy(config))  # PreTrainedModel adjusts its config: not the caller's
        self.folder = Path(folder)
        self.session = _session(self.folder)
        self.output_names = [o.name for o in self.session.get_outputs()]
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        self.layers = sum(1 for name in shapes if name.endswith(".key"))
        heads, _, head_dim = shapes[PAST.format(0, "key")][1:]
        self.kv_shape = (int(heads), int(head_dim))
        if (self.folder / "generation_config.json").is_file():
            self.generation_config = GenerationConfig.from_pretrained(str(self.folder))
        self._anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    @property
    def device(self) -> Any:
        """The CPU, where the session takes its inputs."""
        return torch.device("cpu")

    def forward(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None, cache: Any = None,
                labels: Any = None, use_cache: Any = None, logits_to_keep: int = 0, **kwargs: Any) -> Any:
        """One pass of the graph over ``input_ids`` after ``cache``'s positions; the cache grows in place.

        ``use_cache`` defaults to the config's (true in an exported causal LM's: ``generate`` and serve pass
        it anyway; eval's scoring passes need no cache). Without position ids the positions follow the cache (``past ... past + length - 1``), as the PyTorch
        model's own default; without a cache the past is empty (a prefill, or a plain scoring pass).
        """
        from transformers import DynamicCache
        from transformers.modeling_outputs import CausalLMOutputWithPast

        cache = cache if cache is not None else kwargs.get("past_key_values")  # the name before transformers 5.x
        batch, length = input_ids.shape
        past = cache.get_seq_length() if cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones((batch, past + length), dtype=torch.long)
        if position_ids is None:
            position_ids = torch.arange(past, past + length, dtype=torch.long).expand(batch, -1)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        for i in range(self.layers):
            feeds[PAST.format(i, "key")], feeds[PAST.format(i, "value")] = self._past(cache, i, batch, past)
        arrays = self.session.run(None, {n: t.detach().cpu().contiguous().numpy() for n, t in feeds.items()})
        outputs = {name: torch.from_numpy(a) for name, a in zip(self.output_names, arrays)}
        use_cache = bool(self.config.use_cache if use_cache is None else use_cache)
        if use_cache:
            cache = cache if cache is not None else DynamicCache(config=self.config)
            for i in range(self.layers):  # the graph returns past + new positions: append the new ones
                key, value = (outputs[PRESENT.format(i, kv)][:, :, past:] for kv in ("key", "value"))
                cache.update(key, value, i)
        logits = outputs["logits"].to(input_ids.device)  # the Trainer of eval may hand in GPU tensors
        loss = _lm_loss(logits, labels)
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)

    def _past(self, cache: Any, layer: int, batch: int, past: int) -> tuple[Any, Any]:
        """Layer ``layer``'s cached keys and values, or empty ``(batch, heads, 0, head_dim)`` tensors."""
        if past and layer < len(cache.layers) and cache.layers[layer].keys is not None:
            return cache.layers[layer].keys, cache.layers[layer].values
        empty = torch.zeros((batch, self.kv_shape[0], 0, self.kv_shape[1]))
        return empty, empty


def _classification_loss(logits: Any, labels: Any, config: Any) -> Any:
    import torch.nn.functional as F

    if labels is None:
        return None
    problem = getattr(config, "problem_type", None)
    if problem == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    if problem == "regression" or logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))


def _qa_loss(start_logits: Any, end_logits: Any, start: Any, end: Any) -> Any:
    import torch.nn.functional as F

    if start is None or end is None:
        return None
    width = start_logits.shape[1]
    start, end = start.view(-1).clamp(0, width), end.view(-1).clamp(0, width)
    return (F.cross_entropy(start_logits, start, ignore_index=width)
            + F.cross_entropy(end_logits, end, ignore_index=width)) / 2


def _lm_loss(logits: Any, labels: Any) -> Any:
    import torch.nn.functional as F

    if labels is None:
        return None
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1])
    return F.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=-100)
