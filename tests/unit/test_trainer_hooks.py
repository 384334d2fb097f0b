"""The transformers.Trainer internals LlmtuneTrainer relies on are still there, with the same parameters.

A transformers upgrade that drops, renames or reorders one of them fails here, by name, instead of
silently skipping llmtune's checkpoint, sampler or metric behaviour.
"""

from __future__ import annotations

import inspect
from collections import namedtuple
from dataclasses import fields

import pytest
import torch
import transformers
from transformers import Trainer, TrainingArguments

from llmtune.engine.trainer import LlmtuneTrainer, evaluation_prefix

# Private Trainer methods LlmtuneTrainer overrides, with the parameters each override is written against.
PRIVATE_OVERRIDES = {
    "_save_checkpoint": ["self", "model", "trial"],
    "_get_eval_sampler": ["self", "eval_dataset"],
    "_get_train_sampler": ["self", "train_dataset"],
    "_issue_warnings_after_load": ["self", "load_result"],
}
# Public methods overridden with a fixed parameter list, and private ones called but not overridden.
NAMED_PARAMETERS = {
    "compute_loss": ["self", "model", "inputs", "return_outputs", "num_items_in_batch"],
    "create_optimizer": ["self", "model"],
    "_get_output_dir": ["self", "trial"],
}


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_every_private_override_is_listed_here():
    # A new private override must be added to PRIVATE_OVERRIDES (and get its version comment).
    private = {name for name, value in vars(LlmtuneTrainer).items()
               if callable(value) and name.startswith("_") and not name.startswith("__")}
    assert private == set(PRIVATE_OVERRIDES)


@pytest.mark.parametrize("name", sorted(PRIVATE_OVERRIDES))
def test_private_override_still_exists_with_the_same_parameters(name):
    assert hasattr(Trainer, name), f"transformers {transformers.__version__} has no Trainer.{name}: revisit LlmtuneTrainer"
    assert _parameters(getattr(Trainer, name)) == PRIVATE_OVERRIDES[name]
    assert _parameters(getattr(LlmtuneTrainer, name)) == PRIVATE_OVERRIDES[name]


@pytest.mark.parametrize("name", sorted(NAMED_PARAMETERS))
def test_relied_on_method_keeps_its_parameters(name):
    assert _parameters(getattr(Trainer, name)) == NAMED_PARAMETERS[name]


def test_the_rest_of_what_the_overrides_rely_on():
    params = _parameters(transformers.trainer_utils.rotate_checkpoints)
    assert {"output_dir", "save_total_limit", "use_mtime", "best_model_checkpoint"} <= set(params)
    assert "metric_key_prefix" in _parameters(Trainer.evaluation_loop)
    names = {f.name for f in fields(TrainingArguments)}
    assert {"train_sampling_strategy", "save_total_limit"} <= names
    # engine.trainer.loss_sum_so_far reads the Trainer's loss accumulators (a resumed run's whole-run train_loss)
    finalize = inspect.getsource(Trainer._finalize_training)
    assert "self._total_loss_scalar += self._tr_loss.item()" in finalize
    assert 'metrics["train_loss"] = train_loss' in finalize
    assert _parameters(Trainer.log)[:2] == ["self", "logs"]


@pytest.mark.parametrize(("args", "kwargs", "prefix"), [
    (("loader", "Evaluation"), {}, "eval"),                                   # default
    (("loader", "Evaluation"), {"metric_key_prefix": "test"}, "test"),        # keyword (Trainer.evaluate)
    (("loader", "Prediction", None, None, "predict"), {}, "predict"),         # all positional
    (("loader",), {"description": "x", "ignore_keys": ["a"], "metric_key_prefix": "val"}, "val"),
])
def test_evaluation_prefix_binds_the_real_signature(args, kwargs, prefix):
    assert evaluation_prefix(None, args, kwargs) == prefix


def test_evaluation_prefix_refuses_a_call_the_signature_does_not_take():
    with pytest.raises(TypeError):
        evaluation_prefix(None, ("loader", "Evaluation"), {"metric_prefix": "test"})


def _tiny_trainer(tmp_path, **overrides) -> LlmtuneTrainer:
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=32, n_positions=8, n_layer=1, n_embd=16, n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    rows = [{"input_ids": torch.arange(8) % 32, "labels": torch.arange(8) % 32} for _ in range(4)]
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_eval_batch_size=2,
                             disable_tqdm=True, **overrides)
    return LlmtuneTrainer(model=model, args=args, train_dataset=rows, eval_dataset=rows)


def test_derived_metrics_get_the_prefix_of_every_evaluation(tmp_path):
    trainer = _tiny_trainer(tmp_path)
    seen = []

    def derive(metrics, prefix):
        seen.append(prefix)
        return {f"{prefix}_double_loss": 2 * metrics[f"{prefix}_loss"]}

    trainer.derive_metrics = derive
    metrics = trainer.evaluate(metric_key_prefix="test")
    assert seen == ["test"]
    assert metrics["test_double_loss"] == pytest.approx(2 * metrics["test_loss"])
    trainer.evaluate()
    assert seen == ["test", "eval"]


def test_tied_weights_are_not_reported_missing_after_load(tmp_path, monkeypatch):
    trainer = _tiny_trainer(tmp_path)
    reported = []
    monkeypatch.setattr(Trainer, "_issue_warnings_after_load", lambda self, result: reported.append(result))
    Keys = namedtuple("Keys", ["missing_keys", "unexpected_keys"])
    trainer._issue_warnings_after_load(Keys(["lm_head.weight", "transformer.ln_f.bias"], ["extra"]))
    assert reported == [Keys(["transformer.ln_f.bias"], ["extra"])]


def test_length_grouped_training_uses_the_bucket_sampler_over_the_global_batch(tmp_path):
    from datasets import Dataset

    from llmtune.engine.sampling import LengthBucketSampler

    trainer = _tiny_trainer(tmp_path, per_device_train_batch_size=3, train_sampling_strategy="group_by_length")
    rows = Dataset.from_dict({"input_ids": [[1] * n for n in (1, 5, 2, 4, 3)], "length": [1, 5, 2, 4, 3]})
    sampler = trainer._get_train_sampler(rows)
    assert isinstance(sampler, LengthBucketSampler)
    assert sampler.batch_size == 3 and sampler.lengths.tolist() == [1, 5, 2, 4, 3]
