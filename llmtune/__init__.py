"""llmtune: one command-line path from raw text to a trained, evaluated, usable language model."""

__version__ = "0.1.0"
