"""Length-bucketed batches, the new-head learning-rate multiplier and freezing the lower layers."""

import pytest
import torch

from llmtune.engine.sampling import LengthBucketSampler
from llmtune.engine.trainer import scale_lr_of
from llmtune.errors import ConfigError
from llmtune.adapters import freeze_lower_layers


def _batches(order, size):
    return [order[i:i + size] for i in range(0, len(order), size)]


def test_bucket_sampler_yields_every_row_once_in_length_sorted_batches():
    lengths = [5, 1, 9, 3, 3, 7, 2, 8, 6, 4]
    torch.manual_seed(0)
    order = list(LengthBucketSampler(lengths, batch_size=3))
    assert sorted(order) == list(range(10)) and len(order) == 10
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in _batches(order, 3))
    # Sorted lengths 1 2 3 3 4 5 6 7 8 9 cut into threes: the batches never overlap in length.
    assert spans == [(1, 3), (3, 5), (6, 8), (9, 9)]
    assert [lengths[i] for i in order[-1:]] == [9]  # the short batch comes last


def test_bucket_sampler_reshuffles_each_epoch_from_the_seed_alone():
    lengths = [1, 1, 1, 1, 2, 2, 2, 2]
    torch.manual_seed(1)
    first = list(LengthBucketSampler(lengths, 4))
    torch.rand(5)  # the global RNG moving on (dropout, other samplers) does not change the order
    again = LengthBucketSampler(lengths, 4, seed=1)
    assert list(again) == first
    orders = set()
    for epoch in range(20):
        again.set_epoch(epoch)
        orders.add(tuple(again))
    assert len(orders) > 1


def _tiny_classifier():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16, num_labels=2)
    return BertForSequenceClassification(config)


def test_scale_lr_moves_only_the_named_parameters_into_faster_groups():
    model = _tiny_classifier()
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-3)
    moved = scale_lr_of(optimizer, model, frozenset({"classifier.weight", "classifier.bias"}), 10.0)
    head = {id(model.classifier.weight): 0.01, id(model.classifier.bias): 0.0}
    assert moved == 2
    fast = [g for g in optimizer.param_groups if g["lr"] == pytest.approx(1e-2)]
    assert sorted((id(p), g["weight_decay"]) for g in fast for p in g["params"]) == sorted(head.items())
    slow = [id(p) for g in optimizer.param_groups if g["lr"] == pytest.approx(1e-3) for p in g["params"]]
    assert len(slow) == len(list(model.parameters())) - 2 and not set(slow) & set(head)


def test_freeze_lower_layers_fixes_embeddings_and_the_lowest_blocks():
    model = _tiny_classifier()
    freeze_lower_layers(model, 2)
    trainable = {n.split(".")[3] if n.startswith("bert.encoder") else n.split(".")[1]
                 for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert trainable == {"2", "pooler", "weight", "bias"}  # block 2, the pooler, the classifier
    assert any(n.startswith("bert.embeddings.position") for n in frozen)
    assert all(not n.startswith("bert.encoder.layer.2") for n in frozen)


def test_freeze_lower_layers_keeps_the_top_block_trainable_when_asked_for_every_block():
    # The default recipe's freeze_layers=1 must work on a one-block model too: the cap is blocks - 1.
    model = _tiny_classifier()
    frozen = freeze_lower_layers(model, 3)
    assert frozen == freeze_lower_layers(_tiny_classifier(), 2)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("bert.encoder.layer.2"))
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("bert.encoder.layer.1"))


def test_freeze_lower_layers_auto_fixes_one_block_only_in_models_of_six_or_more():
    from transformers import BertConfig, BertForSequenceClassification

    deep = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=6,
                                                    num_attention_heads=2, intermediate_size=16))
    assert freeze_lower_layers(deep, "auto") == freeze_lower_layers(
        BertForSequenceClassification(deep.config), 1) > 0
    assert not any(p.requires_grad for n, p in deep.named_parameters() if n.startswith("bert.encoder.layer.0."))
    assert all(p.requires_grad for n, p in deep.named_parameters() if n.startswith("bert.encoder.layer.1."))
    shallow = _tiny_classifier()  # 3 blocks: one is a third of the model
    assert freeze_lower_layers(shallow, "auto") == 0 and all(p.requires_grad for p in shallow.parameters())


def test_freeze_lower_layers_refuses_a_model_without_blocks():
    with pytest.raises(ConfigError, match="freeze_layers=0"):
        freeze_lower_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)), 1)


@pytest.mark.parametrize(("lora", "expected"), [(False, 2e-4), (True, 1e-3)])
def test_lora_lr_multiplier_applies_only_with_lora(tmp_path, lora, expected):
    from llmtune.config.schema import RunConfig
    from llmtune.engine.trainer import training_arguments

    cfg = RunConfig(command="finetune", task="classification",
                    train={"lr": 2e-4}, lora={"enabled": lora, "lr_multiplier": 5})
    args = training_arguments(cfg, tmp_path, has_eval=False, precision="fp32")
    assert args.learning_rate == pytest.approx(expected)


def test_evaluation_keeps_the_data_order_under_length_grouping(tmp_path):
    # QA post-processing pairs predictions with features by position: a reordered evaluation would
    # score every answer against another question (transformers 5 length-groups eval batches too).
    from datasets import Dataset
    from transformers import TrainingArguments

    from llmtune.engine.trainer import LlmtuneTrainer

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_eval_batch_size=2,
                             train_sampling_strategy="group_by_length")
    rows = Dataset.from_dict({"input_ids": [[1] * n for n in (1, 5, 2, 4, 3)], "length": [1, 5, 2, 4, 3]})
    trainer = LlmtuneTrainer(model=_tiny_classifier(), args=args, train_dataset=rows, eval_dataset=rows)
    assert list(trainer._get_eval_sampler(rows)) == [0, 1, 2, 3, 4]
