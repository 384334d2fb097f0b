"""Tests for llmtune.modeling: presets, config building, safe loading, precision and FLOPs."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from llmtune.errors import ConfigError, ModelError
from llmtune.modeling import (
    PRESETS,
    build_config,
    build_model,
    count_parameters,
    detect_device,
    estimate_flops_per_token,
    format_params,
    load_pretrained,
    resolve_model_path,
    resolve_precision,
)

_SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "our robot"]
_VERBS = ["reads", "eats", "sees", "likes", "builds"]
_OBJECTS = ["a book", "the apple", "some bread", "a small house", "the red ball"]
SENTENCES = [f"{s} {v} {o} ." for s in _SUBJECTS for v in _VERBS for o in _OBJECTS][:50]

# Shapes small enough that each forward pass takes milliseconds.
TINY_OVERRIDES = {
    "gpt2": {"n_layer": 2, "n_embd": 32, "n_head": 2},
    "llama": {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
              "num_key_value_heads": 2},
    "bert": {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2},
}
TASK = {"gpt2": "causal_lm", "llama": "causal_lm", "bert": "masked_lm"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
        monkeypatch.setenv(name, "1")


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerFast:
    # Special tokens in a non-default order so the test notices ids that were not taken from it.
    specials = ["[UNK]", "[MASK]", "[PAD]", "[BOS]", "[EOS]"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=specials))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", mask_token="[MASK]", pad_token="[PAD]", bos_token="[BOS]",
        eos_token="[EOS]",
    )


def _tiny_model(tokenizer, arch: str = "gpt2"):
    torch.manual_seed(0)
    return build_model(build_config(arch, "tiny", TINY_OVERRIDES[arch], tokenizer, 16), TASK[arch])


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_build_each_arch_matches_tokenizer_and_gives_finite_loss(tokenizer, arch: str) -> None:
    config = build_config(arch, "tiny", TINY_OVERRIDES[arch], tokenizer, max_length=16)

    assert config.vocab_size == len(tokenizer)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (3, 4, 2)
    assert config.max_position_embeddings >= 16
    assert config.num_hidden_layers == 2 and config.hidden_size == 32
    model = _tiny_model(tokenizer, arch)
    batch = tokenizer(SENTENCES[:4], padding=True, return_tensors="pt")
    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["input_ids"]).loss
    assert math.isfinite(loss.item()) and loss.item() > 0


def test_presets_cover_every_arch_and_size() -> None:
    assert set(PRESETS) == {"gpt2", "llama", "bert"}
    assert all(set(sizes) == {"tiny", "small", "base"} for sizes in PRESETS.values())


def test_tiny_preset_is_a_few_million_params(tokenizer) -> None:
    config = build_config("gpt2", "tiny", {}, tokenizer, 256)
    with torch.device("meta"):
        total, trainable = count_parameters(build_model(config))
    assert 1_000_000 < total < 6_000_000 and trainable == total


def test_alias_override_reaches_the_real_field(tokenizer) -> None:
    config = build_config("gpt2", "tiny", {"hidden_size": 64, "num_hidden_layers": 1}, tokenizer, 16)
    assert (config.n_embd, config.n_layer) == (64, 1)


def test_override_typo_suggests_the_field(tokenizer) -> None:
    with pytest.raises(ConfigError, match="model.config.n_layers: GPT2Config has no field 'n_layers'.*did you mean 'n_layer'"):
        build_config("gpt2", "tiny", {"n_layers": 2}, tokenizer, 16)


def test_unknown_arch_suggests_a_choice(tokenizer) -> None:
    with pytest.raises(ConfigError, match="did you mean 'gpt2'"):
        build_config("gtp2", "tiny", {}, tokenizer, 16)


def test_max_length_beyond_positions_is_a_config_error(tokenizer) -> None:
    with pytest.raises(ConfigError, match="max_length 128 is longer than the model's 64 positions.*n_positions"):
        build_config("gpt2", "tiny", {"n_positions": 64}, tokenizer, 128)


def test_positions_grow_to_max_length_when_not_set(tokenizer) -> None:
    assert build_config("gpt2", "tiny", {}, tokenizer, 512).n_positions == 512
    assert build_config("gpt2", "tiny", {}, tokenizer, 64).n_positions == 256


def test_vocab_override_smaller_than_tokenizer_is_refused(tokenizer) -> None:
    with pytest.raises(ConfigError, match=f"smaller than the tokenizer's {len(tokenizer)} tokens"):
        build_config("gpt2", "tiny", {"vocab_size": 8}, tokenizer, 16)
    assert build_config("gpt2", "tiny", {"vocab_size": 128}, tokenizer, 16).vocab_size == 128


def test_heads_must_divide_hidden_size(tokenizer) -> None:
    with pytest.raises(ConfigError, match="not divisible by 3 attention heads"):
        build_config("gpt2", "tiny", {"n_embd": 32, "n_head": 3}, tokenizer, 16)


def test_gpt2_cannot_be_masked_lm(tokenizer) -> None:
    config = build_config("gpt2", "tiny", TINY_OVERRIDES["gpt2"], tokenizer, 16)
    with pytest.raises(ConfigError, match="gpt2 cannot be trained as masked_lm"):
        build_model(config, "masked_lm")


def test_count_and_format_params(tokenizer) -> None:
    model = _tiny_model(tokenizer)
    total, trainable = count_parameters(model)
    assert total == sum(p.numel() for p in model.parameters()) == trainable
    model.transformer.wte.weight.requires_grad_(False)
    assert count_parameters(model) == (total, total - model.transformer.wte.weight.numel())
    assert [format_params(n) for n in (999, 12_345, 5_273_088, 124_439_808, 1.5e9)] == [
        "999", "12.3K", "5.3M", "124.4M", "1.5B"]


def test_flops_per_token_formula(tokenizer) -> None:
    model = _tiny_model(tokenizer)
    total, _ = count_parameters(model)
    # GPT-2 ties the LM head to wte, so only the position table is a pure lookup.
    n = total - model.transformer.wpe.weight.numel()
    expected = 6 * n + 12 * 2 * 32 * 16
    assert estimate_flops_per_token(model, seq_len=16) == expected
    assert estimate_flops_per_token(model.config, seq_len=16) == expected


def test_missing_path_is_not_a_repo_id_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in ("./nope", str(tmp_path / "nope"), "runs/typo", "a/b/c"):
        with pytest.raises(ModelError, match="model folder not found"):
            resolve_model_path(name)


def test_folder_without_config_json(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="has no config.json: not a Hugging Face model folder"):
        resolve_model_path(str(tmp_path))
    (tmp_path / "config.yaml").write_text("task: causal_lm\n")
    with pytest.raises(ModelError, match="run dir .* has no saved model"):
        resolve_model_path(str(tmp_path))


def test_run_dir_with_model_subfolder_or_top_level(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    (sub / "model").mkdir(parents=True)
    (sub / "config.yaml").write_text("{}\n")
    (sub / "model" / "config.json").write_text("{}")
    assert resolve_model_path(str(sub)) == str(sub / "model")
    top = tmp_path / "top"
    top.mkdir()
    (top / "config.yaml").write_text("{}\n")
    (top / "config.json").write_text("{}")
    assert resolve_model_path(str(top)) == str(top)


def test_save_then_load_round_trip(tokenizer, tmp_path: Path) -> None:
    model = _tiny_model(tokenizer).eval()
    run_dir = tmp_path / "run"
    model.save_pretrained(run_dir / "model")
    (run_dir / "config.yaml").write_text("{}\n")
    assert list((run_dir / "model").glob("*.safetensors"))

    loaded = load_pretrained(str(run_dir), "AutoModelForCausalLM")

    ids = torch.tensor([[3, 5, 6, 7]])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


def test_pickled_weights_are_refused_unless_allowed(tokenizer, tmp_path: Path) -> None:
    model = _tiny_model(tokenizer)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")

    with pytest.raises(ModelError, match=r"pickled weights \(pytorch_model.bin\).*--allow-pickle"):
        load_pretrained(str(tmp_path), "AutoModelForCausalLM")
    loaded = load_pretrained(str(tmp_path), "AutoModelForCausalLM", allow_pickle=True)
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight)


def test_remote_code_needs_permission(tmp_path: Path) -> None:
    auto_map = {"AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XModel"}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "x_custom", "auto_map": auto_map}))
    with pytest.raises(ModelError, match="--trust-remote-code"):
        load_pretrained(str(tmp_path), "AutoModelForCausalLM")


def test_hub_id_fails_fast_offline() -> None:
    start = time.monotonic()
    with pytest.raises(ModelError, match="offline mode is on"):
        load_pretrained("some-org/some-model", "AutoModelForCausalLM")
    assert time.monotonic() - start < 5


def test_hub_id_fails_fast_without_offline_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # A closed local port makes "unreachable" deterministic even on machines with network.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr("llmtune.hub._reachable_cache", {})
    start = time.monotonic()
    with pytest.raises(ModelError, match="cannot be reached"):
        load_pretrained("some-org/some-model", "AutoModelForCausalLM")
    assert time.monotonic() - start < 5


CPU = {"cuda": False, "bf16": False, "name": "cpu", "count": 0}
OLD_GPU = {"cuda": True, "bf16": False, "name": "Tesla T4", "count": 1}
NEW_GPU = {"cuda": True, "bf16": True, "name": "H100", "count": 1}


def test_precision_on_cpu() -> None:
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(ConfigError, match="15x slower.*fp32"):
        resolve_precision("bf16", CPU)
    with pytest.raises(ConfigError, match="fp16 mixed precision needs a CUDA GPU"):
        resolve_precision("fp16", CPU)
    device = detect_device()
    assert device["cuda"] == torch.cuda.is_available() and device["name"]
    if not device["cuda"]:
        assert resolve_precision("auto") == "fp32"


def test_precision_on_gpus() -> None:
    assert resolve_precision("auto", NEW_GPU) == "bf16"
    assert resolve_precision("auto", OLD_GPU) == "fp16"
    with pytest.raises(ConfigError, match="Tesla T4 does not support bf16"):
        resolve_precision("bf16", OLD_GPU)


def test_dropout_fields_cover_each_architecture_naming() -> None:
    from transformers import BertConfig, DistilBertConfig, GPT2Config, LlamaConfig

    from llmtune.modeling import dropout_fields

    assert dropout_fields(BertConfig(), None) == {}
    bert = dropout_fields(BertConfig(), 0.0)
    assert bert == {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "classifier_dropout": 0.0}
    assert set(dropout_fields(GPT2Config(), 0.2)) >= {"resid_pdrop", "embd_pdrop", "attn_pdrop"}
    assert set(dropout_fields(DistilBertConfig(), 0.0)) >= {"dropout", "attention_dropout", "seq_classif_dropout"}
    assert dropout_fields(LlamaConfig(), 0.1) == {"attention_dropout": 0.1}
