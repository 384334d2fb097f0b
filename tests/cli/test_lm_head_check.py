"""Models without a trained causal LM head are refused by every generation load (generate, serve) and by eval.

transformers loads an encoder with ``AutoModelForCausalLM`` after only a warning, with a randomly
initialised head that prints noise; ``modeling.check_head`` (shared with ``llmtune eval``) refuses it
in one line that says what to train instead.
"""

import pytest
from helpers import one_line_error, save_tiny_llama


@pytest.fixture(scope="module")
def bare_bert(tmp_path_factory, tiny_bert):
    """A headless BertModel (as all-MiniLM-L6-v2 is saved) with the tiny BERT's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("bare-bert")
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(str(root))
    tok.save_pretrained(str(root))
    return root


def test_generate_refuses_an_encoder_without_lm_head(cli, bare_bert):
    result = cli("generate", "-m", bare_bert, "hello", "--max-new-tokens", "4")
    one_line_error(result, "is a BertModel", "no causal LM head to generate with",
                   "llmtune pretrain --arch llama", "finetune --task generation")
    assert "finetune --task lm" not in result.output


def test_generate_refuses_a_masked_lm_and_names_its_task(cli, tiny_bert):
    result = cli("generate", "-m", tiny_bert, "hello", "--max-new-tokens", "4")
    one_line_error(result, "is a BertForMaskedLM", "no causal LM head",
                   "evaluate it with llmtune eval --task lm")


def test_serve_load_refuses_an_encoder(bare_bert):
    """serve loads through the same ``load_for_generation`` (checked here without starting a server)."""
    from llmtune.config.schema import RunConfig
    from llmtune.decoding import load_for_generation
    from llmtune.errors import ModelError

    cfg = RunConfig.model_validate({"command": "serve", "model": {"name_or_path": str(bare_bert)}})
    with pytest.raises(ModelError, match="no causal LM head to generate with"):
        load_for_generation(cfg)


def test_a_tiny_llama_still_generates(cli, tmp_path):
    save_tiny_llama(tmp_path / "llama", ["the quick brown fox jumps over the lazy dog."] * 4, tokenizer="char",
                    vocab_size=60, context=64)
    result = cli("generate", "-m", tmp_path / "llama", "the fox", "--temperature", "0", "--max-new-tokens", "5")
    assert result.exit_code == 0, result.output


def test_eval_lm_on_an_encoder_suggests_a_real_command(cli, bare_bert, tmp_path):
    (tmp_path / "val.txt").write_text("the quick brown fox\njumps over the lazy dog\n")
    result = cli("eval", "-m", bare_bert, "--task", "lm", "--dataset", tmp_path / "val.txt", "-o", tmp_path / "ev")
    one_line_error(result, "is a BertModel", "no lm head to evaluate", "llmtune pretrain --arch llama")
    assert "finetune --task lm" not in result.output


def test_serve_command_refuses_before_listening(cli, bare_bert):
    pytest.importorskip("fastapi")
    result = cli("serve", "-m", bare_bert, "--port", "18777")
    one_line_error(result, "is a BertModel", "no causal LM head to generate with")
