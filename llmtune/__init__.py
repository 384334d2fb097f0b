"""llmtune: one command-line path from raw text to a trained, evaluated, usable language model."""

import logging

__version__ = "0.1.0"

# torchao (installed with the compress extra) is imported by transformers' Trainer and by peft whenever it is
# installed; on a CPU build it logs one warning per CUDA-only kernel library it cannot load, and registers enums
# the way torch's pytree now reports as deprecated. That is noise on every command that trains or loads a model.
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)
