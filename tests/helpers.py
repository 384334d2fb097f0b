"""Plain helpers that several test modules share: toy data, file writers, the in-process CLI.

Test modules import them as ``from helpers import ...``: pytest puts ``tests/`` on ``sys.path`` because
``tests/conftest.py`` lives there (rootdir conftest, default "prepend" import mode), so this works under
``pytest``, ``python -m pytest`` and xdist alike. Fixtures built from them live in the conftest files.
"""

import csv
import json
import random
from pathlib import Path
from typing import Any, Iterable, Optional

# Classification toy data: two class keywords among three filler words per row, so a 2-layer, 32-wide
# BERT learns it in a few epochs.
CLASSES = {
    "sports": ["football", "goal", "match", "team", "coach"],
    "weather": ["rain", "sunny", "storm", "cloudy", "wind"],
    "cooking": ["recipe", "oven", "flour", "soup", "garlic"],
}
FILLER = ["the", "a", "today", "we", "saw", "some", "very", "new", "old", "people", "said", "that", "it", "was"]

# Language-model toy text: three templates over 5 adjectives x 5 nouns x 5 places.
SENTENCES = [
    "the {a} {n} walks to the {p} in the morning .",
    "a {a} {n} sleeps near the {p} at night .",
    "every {n} likes the {a} {p} .",
]
ADJ = ["red", "small", "quiet", "old", "happy"]
NOUNS = ["cat", "dog", "bird", "fox", "horse"]
PLACES = ["river", "market", "garden", "forest", "hill"]


def classification_rows(n: int, seed: int) -> list[dict]:
    """``n`` rows ``{"text", "label"}``; row ``i`` is ``sports`` when ``i % 5 == 0``, else class ``i % 3``.

    Sports is the most frequent class but under half of the rows: 93 sports, 54 weather, 53 cooking in 200.
    """
    rng = random.Random(seed)
    names = list(CLASSES)
    rows = []
    for i in range(n):
        label = names[i % len(names)] if i % 5 else names[0]  # sports is the majority class
        words = rng.sample(FILLER, 3) + rng.sample(CLASSES[label], 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def pretrain_lines(n: int) -> list[str]:
    """``n`` sentences from ``SENTENCES``, no randomness: line ``i`` is template ``i % 3`` filled by ``i``."""
    lines = []
    for i in range(n):
        template = SENTENCES[i % len(SENTENCES)]
        lines.append(template.format(a=ADJ[i % 5], n=NOUNS[(i // 5) % 5], p=PLACES[(i // 25) % 5]))
    return lines


def write_csv(path: Path, rows: Iterable[dict], fields: tuple[str, ...] = ("text", "label")) -> Path:
    """Write ``rows`` (only ``fields``) as CSV with a header; returns ``path``."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in fields})
    return path


def write_jsonl(path: Path, rows: Iterable[dict]) -> Path:
    """Write one JSON object a line; returns ``path``."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[Any]:
    """The JSON objects of a JSON Lines file (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def invoke(*args: Any, input: Optional[str] = None) -> Any:
    """Run ``llmtune ARGS`` in-process (each argument through ``str``) and return Typer's ``Result``."""
    from typer.testing import CliRunner

    from llmtune.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def output_lines(result: Any) -> list[str]:
    """The non-blank output lines of a CLI result, without ``[llmtune]`` log lines."""
    return [line for line in result.output.splitlines() if line.strip() and not line.startswith("[llmtune]")]


def one_line_error(result: Any, *words: str) -> None:
    """Assert the command failed with exit 2 and one ``error:`` line that holds every word."""
    assert result.exit_code == 2, result.output
    lines = output_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for word in words:
        assert word in lines[0], (word, lines[0])


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file, read from its IHDR chunk (asserting the file is a PNG)."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR", path
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


def save_tiny_llama(root: Path, corpus: Iterable[str], *, tokenizer: str = "bpe", vocab_size: int = 300,
                    min_frequency: int = 1, tokenizer_max_length: Optional[int] = None, hidden: int = 32,
                    layers: int = 2, heads: int = 2, context: int = 128, extra_vocab: int = 0,
                    tied: bool = True) -> tuple[Any, Any]:
    """A random LlamaForCausalLM (seed 0) and a tokenizer trained on ``corpus``, saved in ``root`` as
    `llmtune pretrain` saves them; returns ``(model, tokenizer)``. The MLP is twice the hidden size."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    tok = train_tokenizer(list(corpus), TokenizerConfig(type=tokenizer, vocab_size=vocab_size,
                                                        min_frequency=min_frequency,
                                                        model_max_length=tokenizer_max_length or context))
    config = LlamaConfig(vocab_size=len(tok) + extra_vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=context, tie_word_embeddings=tied, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(str(root))
    tok.save_pretrained(str(root))
    return model, tok


def save_bert_classifier(root: Path, tokenizer_folder: Path, labels: list[str], *, hidden: int = 32,
                         layers: int = 2, heads: int = 2) -> None:
    """A random BertForSequenceClassification (seed 0) over ``labels`` with the tokenizer of ``tokenizer_folder``,
    saved in ``root``. The intermediate size is twice the hidden size, positions 128."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=128, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(root))
    tok.save_pretrained(str(root))
