"""Pipelines: commands that compose runners (``quickstart`` runs tokenizer -> pretrain -> finetune -> eval -> generate).

They sit one layer above ``llmtune/runs``, so runners never import each other.
"""
