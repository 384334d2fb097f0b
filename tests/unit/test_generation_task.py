"""Generation fine-tuning: format detection, prompt rendering and label masking on hand-checked tokens.

A character-level tokenizer (one token per character, eos ``<|endoftext|>`` = id 0) makes every
token sequence readable: the trained text is the characters whose label is not -100.
"""

import pytest

from llmtune.errors import ConfigError, DataError

EOS = "<|endoftext|>"
CHARS = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 #:.,?!\n<>|"


@pytest.fixture(scope="module")
def tok():
    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    return train_tokenizer([CHARS], TokenizerConfig(type="char", vocab_size=200, min_frequency=1))


def featurize(tok, fmt, rows, max_length=512, train_on_prompt=False, prefix=()):
    from llmtune.tasks.generation import featurize_batch

    batch = {key: [row.get(key) for row in rows] for key in rows[0]}
    return featurize_batch(batch, list(range(len(rows))), tok, fmt, max_length, train_on_prompt, list(prefix))


def split(tok, ids, labels):
    """(whole text, trained text) of one example, reading the tokens one by one."""
    tokens = tok.convert_ids_to_tokens(ids)
    return "".join(tokens), "".join(t for t, label in zip(tokens, labels) if label != -100)


# ---------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("columns, expected", [
    (["messages", "text"], "chat"),
    (["instruction", "input", "output"], "alpaca"),
    (["instruction", "output", "prompt", "completion"], "alpaca"),
    (["prompt", "completion", "id"], "prompt_completion"),
    (["text", "meta"], "text"),
])
def test_format_is_detected_from_the_columns(columns, expected):
    from llmtune.tasks.chat_formats import detect_format

    assert detect_format(columns, None, "train.jsonl") == expected


def test_no_recognisable_format_lists_columns_and_formats():
    from llmtune.tasks.chat_formats import detect_format

    with pytest.raises(DataError) as err:
        detect_format(["question", "answer"], None, "qa.jsonl")
    message = str(err.value)
    assert "question, answer" in message and "prompt_completion (prompt, completion)" in message
    assert "alpaca (instruction, output, [input])" in message and "--format" in message


def test_requested_format_needs_its_columns():
    from llmtune.tasks.chat_formats import detect_format

    assert detect_format(["prompt", "completion", "text"], "text", "d") == "text"
    with pytest.raises(DataError, match="--format chat needs column.s. messages but d has: prompt, completion"):
        detect_format(["prompt", "completion"], "chat", "d")


# ---------------------------------------------------------------------------------------------- masking


def test_alpaca_trains_only_the_output_and_eos(tok):
    out = featurize(tok, "alpaca", [{"instruction": "Add 1 and 2.", "input": "", "output": "3"},
                                    {"instruction": "Upper case.", "input": "dog", "output": "DOG"}])
    whole, trained = split(tok, out["input_ids"][0], out["labels"][0])
    assert whole == f"### Instruction:\nAdd 1 and 2.\n\n### Response:\n3{EOS}"
    assert trained == f"3{EOS}"
    assert out["labels"][0] == [-100] * 45 + [tok.convert_tokens_to_ids("3"), 0]  # 45 prompt characters
    whole, trained = split(tok, out["input_ids"][1], out["labels"][1])
    assert whole == f"### Instruction:\nUpper case.\n\n### Input:\ndog\n\n### Response:\nDOG{EOS}"
    assert trained == f"DOG{EOS}"
    assert out["length"] == [47, 64] and out["trained"] == [2, 4] and out["truncated"] == [False, False]


def test_prompt_completion_keeps_the_text_as_written_and_does_not_double_eos(tok):
    out = featurize(tok, "prompt_completion", [{"prompt": "Q: hi\nA:", "completion": " yes"},
                                               {"prompt": "x", "completion": f"y{EOS}"}])
    assert split(tok, out["input_ids"][0], out["labels"][0]) == (f"Q: hi\nA: yes{EOS}", f" yes{EOS}")
    assert split(tok, out["input_ids"][1], out["labels"][1]) == (f"xy{EOS}", f"y{EOS}")


def test_train_on_prompt_labels_every_token_but_the_first(tok):
    out = featurize(tok, "prompt_completion", [{"prompt": "ab", "completion": "c"}], train_on_prompt=True)
    ids, labels = out["input_ids"][0], out["labels"][0]
    assert tok.convert_ids_to_tokens(ids) == ["a", "b", "c", EOS]
    assert labels == [-100, *ids[1:]]


def test_leading_special_tokens_of_the_tokenizer_start_every_example_untrained(tok):
    from tokenizers import processors

    from llmtune.tasks.generation import special_prefix

    bos_tok = tok.__class__(tokenizer_object=tok.backend_tokenizer.__class__.from_str(tok.backend_tokenizer.to_str()),
                            eos_token=EOS, bos_token=EOS, pad_token="<|pad|>")
    bos_tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single=f"{EOS} $A",
                                                                            special_tokens=[(EOS, 0)])
    assert special_prefix(tok) == [] and special_prefix(bos_tok) == [0]
    out = featurize(bos_tok, "prompt_completion", [{"prompt": "a", "completion": "b"}], prefix=special_prefix(bos_tok))
    assert bos_tok.convert_ids_to_tokens(out["input_ids"][0]) == [EOS, "a", "b", EOS]
    assert out["labels"][0][:2] == [-100, -100] and out["trained"] == [2]


def test_chat_uses_the_builtin_template_and_trains_every_assistant_turn(tok):
    from llmtune.chat_template import ensure_chat_template

    ensure_chat_template(tok)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Ciao"}]
    out = featurize(tok, "chat", [{"messages": messages}])
    whole, trained = split(tok, out["input_ids"][0], out["labels"][0])
    assert whole == (f"<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello{EOS}\n<|user|>\nBye\n"
                     f"<|assistant|>\nCiao{EOS}")
    assert trained == f"Hello{EOS}Ciao{EOS}"  # the newline after each eos is template text, not trained


def test_chat_prompt_is_the_conversation_up_to_the_last_reply(tok):
    from llmtune.chat_template import ensure_chat_template
    from llmtune.tasks.chat_formats import alpaca_prompt, prompt_text

    ensure_chat_template(tok)
    row = {"messages": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"},
                        {"role": "user", "content": "C"}, {"role": "assistant", "content": "D"}]}
    assert prompt_text("chat", row, tok) == f"<|user|>\nA\n<|assistant|>\nB{EOS}\n<|user|>\nC\n<|assistant|>\n"
    assert prompt_text("alpaca", {"instruction": " Go. ", "output": "x"}, tok) == alpaca_prompt("Go.")


def test_truncation_cuts_on_the_right_and_counts_examples_without_labels(tok):
    rows = [{"prompt": "abcdef", "completion": "gh"}, {"prompt": "abcdefghij", "completion": "k"},
            {"prompt": "ab", "completion": "c"}]
    out = featurize(tok, "prompt_completion", rows, max_length=8)
    assert out["truncated"] == [True, True, False]
    assert split(tok, out["input_ids"][0], out["labels"][0]) == ("abcdefgh", "gh")  # eos cut off
    assert out["trained"] == [2, 0, 2]


# ---------------------------------------------------------------------------------------------- bad rows


@pytest.mark.parametrize("messages, message", [
    ([{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}], "message 2 has role 'bot'"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
     "message 2 is 'user' where 'assistant' was expected"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "system", "content": "c"}],
     "message 3 is 'system' where 'user' was expected"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
     "the conversation must end with an assistant reply"),
    ([{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": " "}],
     "assistant message 3 is empty"),
    ("hello", "'messages' must be a non-empty list"),
])
def test_bad_conversations_name_the_row_and_the_message(tok, messages, message):
    from llmtune.chat_template import ensure_chat_template

    ensure_chat_template(tok)
    with pytest.raises(DataError, match="row 2: " + message):
        featurize(tok, "chat", [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
                                {"messages": messages}])


@pytest.mark.parametrize("fmt, row, message", [
    ("alpaca", {"instruction": "Do it.", "input": "", "output": ""}, "row 1 has an empty output"),
    ("alpaca", {"instruction": " ", "input": "", "output": "x"}, "row 1 has an empty instruction"),
    ("prompt_completion", {"prompt": "p", "completion": None}, "row 1 has an empty completion"),
])
def test_empty_responses_are_refused(tok, fmt, row, message):
    with pytest.raises(DataError, match=message):
        featurize(tok, fmt, [row])


def test_a_failing_chat_template_shows_the_row(tok):
    failing = tok.__class__(tokenizer_object=tok.backend_tokenizer, eos_token=EOS, pad_token="<|pad|>")
    failing.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role "
                             "not supported') }}{% endif %}{{ m['content'] }}{% endfor %}")
    row = {"messages": [{"role": "system", "content": "Be nice"}, {"role": "user", "content": "a"},
                        {"role": "assistant", "content": "b"}]}
    with pytest.raises(DataError, match=r"chat template failed on row 1 \(System role not supported\).*Be nice"):
        featurize(failing, "chat", [row])


def test_a_template_that_rewrites_history_is_refused(tok):
    unstable = tok.__class__(tokenizer_object=tok.backend_tokenizer, eos_token=EOS, pad_token="<|pad|>")
    # Numbers each message by the conversation's length: adding a reply changes the earlier text.
    unstable.chat_template = "{% for m in messages %}{{ messages|length }}{{ m['content'] }}{% endfor %}"
    with pytest.raises(DataError, match="renders the conversation differently once reply 2 is added"):
        featurize(unstable, "chat", [{"messages": [{"role": "user", "content": "a"},
                                                   {"role": "assistant", "content": "b"}]}])


# ---------------------------------------------------------------------------------------------- the plug-in


def _data(train_rows, eval_rows):
    from datasets import Dataset

    from llmtune.data.loading import TaskData

    return TaskData(Dataset.from_list(train_rows), Dataset.from_list(eval_rows), [],
                    {"train": "train.jsonl", "validation": "val.jsonl"})


def test_prepare_drops_examples_whose_response_is_cut_away_and_reports_them(tok):
    from llmtune.tasks.generation import GenerationTask

    train = [{"prompt": "ab", "completion": "c"}, {"prompt": "abcdefghij", "completion": "k"},
             {"prompt": "abcdef", "completion": "gh"}]
    task = GenerationTask()
    prepared = task.prepare(_data(train, train[:1]), tok, max_length=8)
    assert [tok.convert_ids_to_tokens(ids) for ids in prepared.train["input_ids"]] == [
        ["a", "b", "c", EOS], list("abcdefgh")]
    assert task.report(None) == {"data_format": "prompt_completion", "train_examples": 3,
                                 "train_examples_truncated": 2, "train_examples_dropped": 1, "eval_examples": 1,
                                 "eval_examples_truncated": 0, "eval_examples_dropped": 0}
    assert any("2 of 3 examples are longer than 8 tokens" in n and "1 of them lost their whole response" in n
               for n in prepared.notes)
    assert task.sample_prompts == [tok("ab")["input_ids"]]
    with pytest.raises(DataError, match="no example of train.jsonl has a response within train.max_length 4"):
        GenerationTask().prepare(_data(train[1:], train[:1]), tok, max_length=4)


def test_packing_restarts_positions_per_example_and_pads_as_a_separate_sequence():
    from llmtune.tasks.generation import pack_examples
    from llmtune.tasks.lm import GenerationCollator

    batch = {"input_ids": [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]], "labels": [[-100, 2, 3], [-100, 5],
                                                                               [-100, 7, 8, 9], [-100]]}
    packed = pack_examples(batch, max_length=5)
    assert packed["input_ids"] == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    assert packed["position_ids"] == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert packed["labels"][0] == [-100, 2, 3, -100, 5] and packed["length"] == [5, 5]
    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "position_ids": [0, 1, 0]},
            {"input_ids": [4], "labels": [-100], "position_ids": [0]}]
    out = GenerationCollator(pad_id=99, packed=True)(rows)
    assert "attention_mask" not in out and out["use_cache"] is False
    assert out["input_ids"].tolist() == [[1, 2, 3], [4, 99, 99]]
    assert out["position_ids"].tolist() == [[0, 1, 0], [0, 0, 1]]
    assert out["labels"].tolist() == [[-100, 2, 3], [-100, -100, -100]]
    plain = GenerationCollator(pad_id=99)([{"input_ids": [1, 2], "labels": [-100, 2]}, {"input_ids": [3]}])
    assert plain["attention_mask"].tolist() == [[1, 1], [1, 0]] and "position_ids" not in plain
    assert plain["labels"].tolist() == [[-100, 2], [3, -100]]  # rows without labels (text blocks) train every token


def _tiny_llama(cls=None):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True, eos_token_id=7)
    return (cls or LlamaForCausalLM)(config)


def test_packing_is_checked_on_the_model_and_refused_where_examples_would_see_each_other(tok):
    from transformers import LlamaForCausalLM

    from llmtune.tasks.generation import GenerationTask, packing_isolates
    from llmtune.tasks.lm import GenerationCollator

    class Leaky(LlamaForCausalLM):  # attends across examples: ignores the position restarts
        def forward(self, input_ids=None, position_ids=None, **kwargs):
            return super().forward(input_ids=input_ids, use_cache=False)

    collator = GenerationCollator(pad_id=0, packed=True)
    model = _tiny_llama()
    model.train()
    assert packing_isolates(model, collator) and model.training
    assert not packing_isolates(_tiny_llama(Leaky), collator)
    task = GenerationTask(packing=True)
    task.tokenizer, task.format = tok, "prompt_completion"
    task.check_model(model)
    assert model.generation_config.eos_token_id == [7, 0]  # generation also stops at the tokenizer's eos
    with pytest.raises(ConfigError, match="Leaky lets packed examples attend to each other"):
        task.check_model(_tiny_llama(Leaky))


def test_tied_input_embeddings_are_never_frozen():
    from llmtune.adapters import freeze_input_embeddings

    tied = _tiny_llama()
    freeze_input_embeddings(tied)
    assert tied.get_input_embeddings().weight.requires_grad and tied.get_output_embeddings().weight.requires_grad
    untied = _tiny_llama()
    untied.lm_head.weight = __import__("torch").nn.Parameter(untied.lm_head.weight.detach().clone())
    freeze_input_embeddings(untied)
    assert not untied.get_input_embeddings().weight.requires_grad and untied.lm_head.weight.requires_grad
