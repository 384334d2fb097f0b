"""engine.pruning's pure parts (counts, which indices stay) and the transformers fact its BERT refusal rests on."""

import pytest
import torch

from llmtune.engine import pruning
from llmtune.errors import ConfigError


def _layout(kind: str, heads: int = 4, layers: int = 3) -> pruning.Layout:
    return pruning.Layout(kind, [object()] * layers, heads, 8, heads_prunable=kind == "llama")


def test_lowest_drops_the_n_smallest_and_keeps_the_rest_in_order():
    assert pruning._lowest(torch.tensor([3.0, 1.0, 2.0, 0.0]), 2).tolist() == [0, 2]
    assert pruning._lowest(torch.tensor([3.0, 1.0, 2.0, 0.0]), 0).tolist() == [0, 1, 2, 3]


def test_plan_counts_rounds_fractions_of_heads_and_channels():
    # 0.3 x 4 heads = 1.2 -> 1; 0.5 x 64 channels = 32; layers pass through.
    assert pruning.plan_counts(_layout("llama"), 64, 0.3, 0.5, 1) == (1, 32, 1)
    assert pruning.plan_counts(_layout("bert"), 64, 0.0, 0.25, 2) == (0, 16, 2)


@pytest.mark.parametrize("layout, heads, ffn, layers, words", [
    (_layout("bert"), 0.3, 0.0, 0, ["bert", "--ffn and --layers"]),
    (_layout("llama"), 1.0, 0.0, 0, ["all 4 heads"]),
    (_layout("llama"), 0.0, 1.0, 0, ["all 64 FFN channels"]),
    (_layout("llama"), 0.0, 0.0, 3, ["must keep one"]),
])
def test_plan_counts_refuses_impossible_requests(layout, heads, ffn, layers, words):
    with pytest.raises(ConfigError) as err:
        pruning.plan_counts(layout, 64, heads, ffn, layers)
    assert all(w in str(err.value) for w in words)


def test_a_bert_with_fewer_heads_runs_but_does_not_reload(tmp_path):
    """Why --heads is refused on BERT: 3 heads of 12 dims sliced out of a 48-wide, 4-head layer run, but a
    config saying 3 heads builds 3 x 16 = 48 rows and from_pretrained rejects the 36-row checkpoint."""
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=99, hidden_size=48, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64)
    model = BertForSequenceClassification(config).eval()
    attention = model.bert.encoder.layer[0].attention
    keep = torch.arange(36)  # heads 0-2 of 12 dimensions each
    for name in ("query", "key", "value"):
        setattr(attention.self, name, pruning._sliced(getattr(attention.self, name), keep, 0))
    attention.output.dense = pruning._sliced(attention.output.dense, keep, 1)
    assert model(input_ids=torch.randint(0, 99, (2, 5))).logits.shape == (2, 2)
    model.config.num_attention_heads = 3
    model.save_pretrained(str(tmp_path))
    with pytest.raises(RuntimeError, match="mismatch"):
        AutoModelForSequenceClassification.from_pretrained(str(tmp_path))
