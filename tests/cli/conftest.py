"""Fixtures that several end-to-end modules share: a tiny BERT folder, classification CSVs, LM text files.

Each is module-scoped, so every test module builds its own copy (as when each module defined them) and
no module can disturb another's files.
"""

import shutil

import pytest
from helpers import classification_rows, pretrain_lines, write_csv


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A BertForMaskedLM + WordPiece tokenizer folder, as `llmtune pretrain --arch bert` saves.

    Built from a config in a second instead of pre-trained: 2 layers, 32 wide, a vocabulary trained on
    ``classification_rows(300, seed=0)``.
    """
    from transformers import BertConfig, BertForMaskedLM

    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("bert")
    corpus = [r["text"] for r in classification_rows(300, seed=0)]
    tok = train_tokenizer(corpus, TokenizerConfig(type="wordpiece", vocab_size=200, min_frequency=1,
                                                  model_max_length=128), family="masked")
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForMaskedLM(config).save_pretrained(str(root))
    tok.save_pretrained(str(root))
    return root



@pytest.fixture(scope="module")
def qa_model(tiny_bert, tmp_path_factory):
    """A BertForQuestionAnswering (random QA head) on tiny_bert's weights and tokenizer."""
    from transformers import AutoModelForQuestionAnswering

    root = tmp_path_factory.mktemp("qa")
    AutoModelForQuestionAnswering.from_pretrained(str(tiny_bert)).save_pretrained(str(root))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_bert / name, root / name)
    return root

@pytest.fixture(scope="module")
def cls_data(tmp_path_factory):
    """A folder with ``train.csv`` (``classification_rows(200, seed=1)``) and ``val.csv`` (60 rows, seed 2)."""
    root = tmp_path_factory.mktemp("cls-data")
    write_csv(root / "train.csv", classification_rows(200, seed=1))
    write_csv(root / "val.csv", classification_rows(60, seed=2))
    return root


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    """A folder with ``train.txt`` (the first 540 lines of ``pretrain_lines(600)``) and ``val.txt`` (the last 60)."""
    root = tmp_path_factory.mktemp("text")
    lines = pretrain_lines(600)
    (root / "train.txt").write_text("\n".join(lines[:540]) + "\n")
    (root / "val.txt").write_text("\n".join(lines[540:]) + "\n")
    return root
