"""``OrtModel``: an ONNX Runtime session behind a transformers-style ``forward``.

An ONNX folder (``llmtune export --format onnx``) loads as an ``nn.Module`` whose ``forward`` takes the
usual tensors (``input_ids``, ``attention_mask``, ``token_type_ids``, labels) and returns the usual
outputs (``logits``, or ``start_logits``/``end_logits`` for question answering, with a loss when labels
are given), so ``llmtune eval`` scores it through the same ``Trainer.predict`` path as a PyTorch model.
The session runs on the CPU; one frozen placeholder parameter lets the Trainer move and inspect the
module as it does any model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch  # this module is imported only when an ONNX folder loads

from llmtune.compress.base import ONNX_FILE, require
from llmtune.errors import ModelError

HEADS = {"ForSequenceClassification": ("classification", ("logits",)),
         "ForQuestionAnswering": ("qa", ("start_logits", "end_logits")),
         "ForCausalLM": ("causal_lm", ("logits",)), "LMHeadModel": ("causal_lm", ("logits",))}
"""Architecture suffix -> (head, ONNX output names) of the heads llmtune exports to ONNX."""
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
    model = OrtModel(folder, config, head)
    return (model, {}) if kwargs.get("output_loading_info") else model


class OrtModel(torch.nn.Module):
    """An ONNX Runtime session with a transformers-style ``forward`` (see the module docstring)."""

    main_input_name = "input_ids"

    def __init__(self, folder: Path, config: Any, head: str) -> None:
        ort = require("onnxruntime", f"the ONNX model in {folder}")
        super().__init__()
        self.config, self.head, self.folder = config, head, Path(folder)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])
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
        """ONNX folders are exported without a key/value cache, so they do not generate."""
        raise ModelError(f"{self.folder} is an ONNX export (no key/value cache): it scores text (llmtune eval) but "
                         "does not generate; generate or serve the PyTorch model folder or a quantized one")


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
