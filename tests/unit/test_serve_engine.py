"""The batched decoder of `llmtune serve`: rows joining and leaving a running batch keep greedy outputs exact."""

import pytest

from llmtune.serve.engine import BatchEngine, Row, SamplingParams, sample_token

CORPUS = ["the quick brown fox jumps over the lazy dog.", "a small red hen walks to the river in the morning!",
          "every cat likes the quiet garden, but not the rain?"]
PROMPTS = ["the fox", "a small red hen walks", "every", "quiet garden, but not the", "dog"]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm(request):
    """A 2-layer random Llama or GPT-2 (context 64) with a character tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    tok = train_tokenizer(CORPUS, TokenizerConfig(type="char", vocab_size=120, min_frequency=1))
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    if request.param == "llama":
        config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, **ids)
    else:
        config = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=64, **ids)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval(), tok


def reference(model, tok, prompt, n):
    """Greedy ids from a plain model.generate call on the prompt alone."""
    import torch

    ids = torch.tensor([tok(prompt)["input_ids"]])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_rows_joining_and_leaving_mid_batch_match_generate(lm):
    model, tok = lm
    engine = BatchEngine(model, tok)
    rows = [Row(tok(p)["input_ids"], SamplingParams(temperature=0)) for p in PROMPTS]
    engine.add(rows[:2])
    for _ in range(3):
        engine.step()
    engine.add(rows[2:4])  # joins a batch whose cache is 3 tokens longer (and shorter prompts)
    for _ in range(5):
        engine.step()
    engine.keep([1, 2, 3])  # row 0 leaves: its padding columns go with it
    engine.add(rows[4:])
    for _ in range(10):
        engine.step()
    assert [len(r.generated) for r in rows] == [9, 19, 16, 16, 11]
    for row, prompt in zip(rows, PROMPTS):
        assert row.generated == reference(model, tok, prompt, len(row.generated)), prompt
    assert engine.size == 4 and engine.can_join


def test_keeping_no_rows_resets_the_engine(lm):
    model, tok = lm
    engine = BatchEngine(model, tok)
    engine.add([Row(tok("every")["input_ids"], SamplingParams(temperature=0))])
    engine.keep([])
    assert engine.size == 0
    row = Row(tok("dog")["input_ids"], SamplingParams(temperature=0))
    engine.add([row])
    engine.step()
    assert row.generated == reference(model, tok, "dog", 2)


def test_a_seed_gives_the_same_sample_whatever_shares_the_batch(lm):
    model, tok = lm
    params = SamplingParams(temperature=1.5, seed=7)

    def sample(extra):
        engine = BatchEngine(model, tok)
        row = Row(tok("the fox")["input_ids"], params)
        engine.add([row] + [Row(tok(p)["input_ids"], SamplingParams(temperature=1.0)) for p in extra])
        for _ in range(12):
            engine.step()
        return row.generated

    alone, crowded = sample([]), sample(["every", "a small red hen walks"])
    assert alone == crowded and len(alone) == 13


def _logits(values):
    import torch

    return torch.tensor(values, dtype=torch.float32)


def test_penalties_follow_openai_formula():
    # logit - presence * [count > 0] - frequency * count: token 0 (twice) 5 - 1 - 2*2 = 0 < token 1's 4.5.
    row = Row([1], SamplingParams(temperature=0, presence_penalty=1.0, frequency_penalty=2.0), generated=[0, 0])
    assert sample_token(_logits([5.0, 4.5, 0.0]), row) == 1
    row.params.frequency_penalty = 0.1  # 5 - 1 - 0.2 = 3.8 < 4.5 still; presence alone decides
    assert sample_token(_logits([5.0, 4.5, 0.0]), row) == 1
    row.params.presence_penalty = 0.0  # 5 - 0.2 = 4.8 > 4.5
    assert sample_token(_logits([5.0, 4.5, 0.0]), row) == 0


def test_top_p_samples_only_inside_the_nucleus():
    from llmtune.serve.engine import _generator

    # probabilities ~0.64, 0.24, 0.09, 0.03: top_p 0.7 keeps the first two only (0.64 < 0.7).
    row = Row([1], SamplingParams(temperature=1.0, top_p=0.7, seed=0))
    row.generator = _generator(0)
    picks = {sample_token(_logits([3.0, 2.0, 1.0, 0.0]), row) for _ in range(300)}
    assert picks == {0, 1}


def test_sliding_window_caches_batch_but_do_not_take_late_joiners():
    """Mistral with a 8-token window: its cache layers keep only the window, so rows cannot be re-aligned to
    join a running batch (``can_join`` turns False and the scheduler waits for the batch to end); rows still
    leave it correctly."""
    import torch
    from transformers import AutoModelForCausalLM, MistralConfig

    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    tok = train_tokenizer(CORPUS, TokenizerConfig(type="char", vocab_size=120, min_frequency=1))
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, sliding_window=8,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = AutoModelForCausalLM.from_config(config).eval()
    engine = BatchEngine(model, tok)
    rows = [Row(tok(p)["input_ids"], SamplingParams(temperature=0)) for p in PROMPTS[:3]]
    engine.add(rows)
    assert not engine.can_join
    for _ in range(11):  # past the window
        engine.step()
    engine.keep([0, 2])
    for _ in range(6):
        engine.step()
    for row, prompt in zip(rows, PROMPTS):
        expected = reference(model, tok, prompt, len(row.generated))  # generate stops at eos; the engine does not
        assert row.generated[:len(expected)] == expected and len(expected) >= 5, prompt
