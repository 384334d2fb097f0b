"""Generation helpers: stop strings while streaming, context limits, token counting, prompt files, chat template."""

import json
from types import SimpleNamespace

import pytest

from llmtune.chat_template import BUILTIN_CHAT_TEMPLATE, ensure_chat_template, uses_builtin_template
from llmtune.config.schema import GenerateConfig
from llmtune.adapters import split_adapter
from llmtune.decoding import GenerateStats, StopWriter, TokenStream, cap_new_tokens, check_prompt_lengths, count_new_tokens, cut_at_stop, generation_config, left_pad, stop_ids
from llmtune.modeling import context_length
from llmtune.errors import DataError, ModelError
from llmtune.runs.generate import read_prompt_file


@pytest.fixture(scope="module")
def tok():
    """A character tokenizer: one token per character, eos <|endoftext|> (0), pad <|pad|> (1)."""
    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    return train_tokenizer(["hello world, the quick brown fox! <|> \n"],
                           TokenizerConfig(type="char", vocab_size=60, min_frequency=1, model_max_length=32))


def test_cut_at_stop_takes_the_earliest_stop():
    assert cut_at_stop("abc<x>def.ghi", [".", "<x>"]) == ("abc", True)
    assert cut_at_stop("abc", ["z"]) == ("abc", False)
    assert cut_at_stop("stop", ["stop"]) == ("", True)


def _writer_output(pieces, stops):
    written = []
    writer = StopWriter(written.append, stops)
    for piece in pieces:
        writer.write(piece)
    writer.close()
    return written, writer


def test_stop_writer_never_prints_part_of_a_stop_string():
    written, writer = _writer_output(["ab", "c<", "|us", "er|>", "more"], ["<|user|>"])
    assert "".join(written) == "abc" == writer.text and writer.stopped
    assert not any("<" in w for w in written)


@pytest.mark.parametrize("stops", [["<|user|>"], ["ab", "a"], ["zz"], []])
def test_stop_writer_matches_cutting_the_whole_text_for_every_split(stops):
    text = "xyz ab<|user|>tail ab zz"
    expected = cut_at_stop(text, stops)[0]
    for i in range(len(text)):
        for j in range(i, len(text)):
            written, _ = _writer_output([text[:i], text[i:j], text[j:]], stops)
            assert "".join(written) == expected, (i, j)


def test_context_length_is_the_smaller_of_positions_and_tokenizer_limit():
    assert context_length(SimpleNamespace(max_position_embeddings=64), SimpleNamespace(model_max_length=32)) == 32
    assert context_length(SimpleNamespace(n_positions=128), SimpleNamespace(model_max_length=int(1e30))) == 128
    assert context_length(SimpleNamespace(), None) is None


def test_cap_new_tokens_warns_once_capped(capsys):
    assert cap_new_tokens(10, 5, 64) == 10
    assert cap_new_tokens(100, 14, 64) == 50
    assert "capped to 50" in capsys.readouterr().err
    assert cap_new_tokens(100, 14, 64, warn=False) == 50 and capsys.readouterr().err == ""
    assert cap_new_tokens(100, 14, None) == 100
    with pytest.raises(DataError, match="no room"):
        cap_new_tokens(10, 64, 64)


def test_check_prompt_lengths_names_the_prompt(tok):
    check_prompt_lengths(tok, ["short"], 32)
    with pytest.raises(DataError, match="prompt 2 of 2 is 40 tokens"):
        check_prompt_lengths(tok, ["ok", "x" * 40], 32)


def test_count_new_tokens_stops_at_eos_and_ignores_padding(tok):
    stops = stop_ids(SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[7])), tok)
    assert stops == {0, 7}  # the model's eos ids and the tokenizer's
    assert count_new_tokens([5, 6, 0, 1, 1], stops, 1) == 3  # through eos
    assert count_new_tokens([5, 7, 9], stops, 1) == 2  # another eos id of the model
    assert count_new_tokens([5, 6, 1, 1], stops, 1) == 2  # stopped by a stop string, then padded
    assert count_new_tokens([5, 6, 8], stops, 1) == 3


def test_left_pad_aligns_the_ends():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [1, 1, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ModelError, match="--batch-size 1"):
        left_pad([[5, 6], [7]], pad_id=None)


def test_token_stream_writes_decoded_text_and_times_the_first_token(tok):
    import torch

    written = []
    stream = TokenStream(tok, written.append)
    ids = tok("hello world!\nthe fox")["input_ids"]
    stream.put(torch.tensor([[3, 4]]))  # the prompt: not written
    for token in ids:
        stream.put(torch.tensor([token]))
    stream.put(torch.tensor([0]))  # eos is skipped
    stream.end()
    assert "".join(written) == "hello world!\nthe fox"
    assert 0 <= stream.first_token_seconds <= stream.elapsed


def test_stats_summary():
    stats = GenerateStats(completions=2, new_tokens=50, seconds=0.5, first_token_seconds=0.02)
    assert stats.tokens_per_second == 100
    assert stats.summary() == "2 completions, 50 new tokens in 0.50 s: 100.0 tokens/s; first token after 20 ms"


def test_generation_config_greedy_and_sampling(tok):
    from transformers import GenerationConfig

    model = SimpleNamespace(generation_config=GenerationConfig(eos_token_id=None, temperature=0.6, do_sample=True))
    greedy = generation_config(model, tok, GenerateConfig(temperature=0, min_new_tokens=99), 20, [])
    assert (greedy.do_sample, greedy.temperature, greedy.top_k) == (False, None, None)
    assert greedy.max_new_tokens == 20 and greedy.min_new_tokens == 20 and greedy.eos_token_id == tok.eos_token_id
    assert greedy.pad_token_id == tok.pad_token_id and greedy.stop_strings is None
    sampled = generation_config(model, tok, GenerateConfig(temperature=0.7, top_k=0, top_p=0.9, num_return_sequences=3),
                                8, ["."])
    assert (sampled.do_sample, sampled.temperature, sampled.top_k, sampled.top_p) == (True, 0.7, 0, 0.9)
    assert sampled.num_return_sequences == 3 and sampled.stop_strings == ["."]
    assert model.generation_config.temperature == 0.6  # the model's own config is left alone


@pytest.mark.parametrize(("field", "value"), [("temperature", -0.1), ("top_p", 0), ("top_p", 1.01), ("top_k", -1),
                                              ("max_new_tokens", 0), ("repetition_penalty", 0), ("stop", [""])])
def test_generate_config_rejects_bad_values(field, value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        GenerateConfig(**{field: value})


def test_read_prompt_files(tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("first prompt\n\n  \nsecond {\"not json\"}\n")
    assert read_prompt_file(text) == ["first prompt", 'second {"not json"}']
    rows = tmp_path / "p.jsonl"
    rows.write_text(json.dumps({"prompt": "a"}) + "\n\n" + json.dumps({"prompt": "b\nc", "x": 1}) + "\n")
    assert read_prompt_file(rows) == ["a", "b\nc"]
    rows.write_text(json.dumps({"question": "a"}) + "\n")
    with pytest.raises(DataError, match="line 1 has no 'prompt' field; fields are: question. Pass --prompt-column"):
        read_prompt_file(rows)
    assert read_prompt_file(rows, "question") == ["a"]
    rows.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        read_prompt_file(rows)
    rows.write_text('{"prompt": 3}\n')
    with pytest.raises(DataError, match="non-empty text"):
        read_prompt_file(rows)


def test_builtin_chat_template_renders_turns_and_marks_assistant_tokens(tok):
    tok.chat_template = None
    assert ensure_chat_template(tok) and uses_builtin_template(tok)
    assert not ensure_chat_template(tok)  # an existing template is kept
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]
    assert tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == (
        "<|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\nhello<|endoftext|>\n<|user|>\nbye\n<|assistant|>\n"
    )
    out = tok.apply_chat_template(chat[:3], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    trained = [i for i, keep in zip(out["input_ids"], out["assistant_masks"]) if keep]
    assert tok.decode(trained) == "hello<|endoftext|>"
    other = SimpleNamespace(chat_template="{{ messages }}")
    assert not ensure_chat_template(other) and other.chat_template == "{{ messages }}"
    assert "generation" in BUILTIN_CHAT_TEMPLATE


def test_split_adapter(tmp_path):
    assert split_adapter(str(tmp_path)) == (str(tmp_path), None)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/m", "task_type": "CAUSAL_LM"}))
    assert split_adapter(str(tmp_path)) == ("/m", tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/m", "task_type": "SEQ_CLS"}))
    with pytest.raises(ModelError, match="SEQ_CLS"):
        split_adapter(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")  # a merged model next to the adapter files loads as is
    assert split_adapter(str(tmp_path)) == (str(tmp_path), None)
