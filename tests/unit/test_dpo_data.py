"""Preference data (``llmtune.tasks.preference_data``): layouts, checks, truncation, token ids; the DPO trainer's TRL hooks."""

from __future__ import annotations

import inspect
import json

import pytest

from llmtune.errors import ConfigError, DataError
from llmtune.tasks.chat_formats import render_row, sharegpt_messages
from llmtune.tasks.preference_data import PAIRS, SHAREGPT, fit_pair, pair_format, pair_of, render_pair

USER = {"role": "user", "content": "Add 2 and 3."}
GOOD = {"role": "assistant", "content": "5"}
BAD = {"role": "assistant", "content": "6"}


@pytest.fixture(scope="module")
def tokenizer():
    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    corpus = ["Add 2 and 3. The answer is 5 or 6, not 7.", "Hello there, how are you today?"] * 20
    return train_tokenizer(corpus, TokenizerConfig(type="bpe", vocab_size=300, min_frequency=1, model_max_length=128))


def test_standard_rows_with_and_without_prompt():
    pair = pair_of({"prompt": "Q: 2+3?\nA:", "chosen": " 5", "rejected": " 6"}, PAIRS, 1)
    assert (pair.prompt, pair.chosen, pair.rejected, pair.conversational) == ("Q: 2+3?\nA:", " 5", " 6", False)
    assert pair_of({"chosen": "5", "rejected": "6"}, PAIRS, 1).prompt == ""


def test_conversational_rows_take_the_shared_messages_as_prompt_when_none_is_given():
    implicit = pair_of({"chosen": [USER, GOOD], "rejected": [USER, BAD]}, PAIRS, 1)
    explicit = pair_of({"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}, PAIRS, 1)
    assert implicit == explicit
    assert (implicit.prompt, implicit.chosen, implicit.rejected) == ([USER], [GOOD], [BAD])
    assert implicit.conversational


def test_sharegpt_rows_map_speakers_to_roles():
    row = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"}],
           "chosen": {"from": "gpt", "value": "Hello."}, "rejected": {"from": "gpt", "value": "Hello hello hello."}}
    pair = pair_of(row, SHAREGPT, 1)
    assert pair.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert pair.chosen == [{"role": "assistant", "content": "Hello."}]
    assert pair_format(["conversations", "chosen", "rejected"], None, "x") == SHAREGPT
    assert pair_format(["prompt", "chosen", "rejected"], None, "x") == PAIRS


def test_sharegpt_is_an_sft_format_rendered_like_chat(tokenizer):
    from llmtune.chat_template import ensure_chat_template

    ensure_chat_template(tokenizer)
    turns = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    assert sharegpt_messages(turns, 1) == messages
    assert render_row("sharegpt", {"conversations": turns}, tokenizer, 1) == \
        render_row("chat", {"messages": messages}, tokenizer, 1)


@pytest.mark.parametrize(("row", "fmt", "words"), [
    ({"prompt": "p", "chosen": None, "rejected": "b"}, PAIRS, ["row 3", "no 'chosen'"]),
    ({"prompt": "p", "chosen": "a", "rejected": None}, PAIRS, ["row 3", "no 'rejected'"]),
    ({"prompt": "p", "chosen": " same", "rejected": "same "}, PAIRS, ["row 3", "the same response"]),
    ({"prompt": "p", "chosen": "   ", "rejected": "b"}, PAIRS, ["row 3", "chosen response is empty"]),
    ({"chosen": [USER, GOOD], "rejected": [USER, GOOD]}, PAIRS, ["row 3", "the same response"]),
    ({"prompt": [USER], "chosen": [GOOD], "rejected": [{"role": "assistant", "content": ""}]}, PAIRS,
     ["row 3", "rejected response is empty"]),
    ({"prompt": [USER, USER], "chosen": [GOOD], "rejected": [BAD]}, PAIRS, ["row 3", "message 2 is 'user'",
                                                                           "alternate"]),
    ({"prompt": [USER], "chosen": [GOOD, GOOD], "rejected": [BAD]}, PAIRS, ["row 3", "'assistant' where 'user'"]),
    ({"conversations": [{"from": "bot", "value": "x"}], "chosen": {"from": "gpt", "value": "a"},
      "rejected": {"from": "gpt", "value": "b"}}, SHAREGPT, ["row 3", "turn 1 is from 'bot'"]),
])
def test_bad_rows_name_the_row(row, fmt, words):
    with pytest.raises(DataError) as err:
        pair_of(row, fmt, 3)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_a_conversation_needs_a_chat_template(tokenizer):
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token=tokenizer.eos_token)
    assert not bare.chat_template
    with pytest.raises(DataError, match="row 4 is a conversation but the tokenizer has no chat template"):
        render_pair(pair_of({"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}, PAIRS, 4), bare, 4)


def test_sft_format_is_refused_for_dpo():
    with pytest.raises(ConfigError, match="--format alpaca is an SFT layout"):
        pair_format(["chosen", "rejected"], "alpaca", "x")


def test_conversation_is_split_at_the_prompt_and_replies_end_at_eos(tokenizer):
    from llmtune.chat_template import ensure_chat_template

    ensure_chat_template(tokenizer)
    prompt, chosen, rejected = render_pair(pair_of({"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}, PAIRS, 1),
                                           tokenizer, 1)
    eos = tokenizer.eos_token
    assert prompt == "<|user|>\nAdd 2 and 3.\n<|assistant|>\n"
    assert (chosen, rejected) == (f"5{eos}", f"6{eos}")  # the template's newline after eos is not trained


@pytest.mark.parametrize(("lengths", "max_length", "max_prompt", "expected"), [
    ((4, 2, 3), 10, None, ((4, 2, 3), False)),   # fits: untouched
    ((8, 2, 3), 10, None, ((7, 2, 3), True)),    # prompt cut to 10 - 3 (longest response)
    ((8, 2, 9), 10, None, ((5, 2, 5), True)),    # prompt never below 10 // 2, then responses cut to 5
    ((8, 2, 3), 20, 4, ((4, 2, 3), True)),       # max_prompt_length cuts even when the pair fits
])
def test_fit_pair_cuts_the_prompt_first(lengths, max_length, max_prompt, expected):
    p, c, r = list(range(100, 100 + lengths[0])), list(range(lengths[1])), list(range(50, 50 + lengths[2]))
    fitted, truncated = fit_pair(p, c, r, max_length, max_prompt, keep=1)
    assert (tuple(len(x) for x in fitted), truncated) == expected
    assert fitted[0][0] == 100 and fitted[0][-1] == p[-1]  # the leading special token and the prompt's end stay


def test_fit_pair_drops_a_pair_cut_to_the_same_response():
    chosen, rejected = [5, 6, 7, 8, 9, 1, 2, 3, 4], [5, 6, 7, 8, 9, 0, 0, 0, 0]
    # prompt 8 -> 5 (half of 10), responses cut to the 5 tokens they share: no preference left
    assert fit_pair([1] * 8, chosen, rejected, max_length=10, max_prompt_length=None, keep=0) == (None, True)


def test_featurize_pairs_ids_eos_and_lengths(tokenizer):
    from llmtune.tasks.generation import special_prefix
    from llmtune.tasks.preference_data import featurize_pairs

    batch = {"prompt": ["Add 2 and 3.", "Hello"], "chosen": [" 5", " there"], "rejected": [" 6", " you"]}
    out = featurize_pairs(batch, [0, 1], tokenizer, PAIRS, 64, None, special_prefix(tokenizer))
    eos = tokenizer.eos_token_id
    for i in range(2):
        p, c, r = out["prompt_ids"][i], out["chosen_ids"][i], out["rejected_ids"][i]
        assert p == special_prefix(tokenizer) + tokenizer(batch["prompt"][i], add_special_tokens=False)["input_ids"]
        assert c == tokenizer(batch["chosen"][i], add_special_tokens=False)["input_ids"] + [eos]
        assert r[-1] == eos and out["length"][i] == 2 * len(p) + len(c) + len(r)
    assert out["truncated"] == [False, False] and out["dropped"] == [False, False]


def test_builtin_preferences_prefer_the_right_answer_that_stops():
    from llmtune.data.builtin import builtin_dir

    rows = [json.loads(line) for line in (builtin_dir("preferences") / "validation.jsonl").read_text().splitlines()]
    instructions = [json.loads(line) for line in
                    (builtin_dir("instructions") / "validation.jsonl").read_text().splitlines()]
    assert len(rows) == len(instructions) == 100
    for row, source in zip(rows, instructions):
        assert row["chosen"] == source["output"] and row["rejected"] != row["chosen"]
        assert row["prompt"].startswith("### Instruction:\n" + source["instruction"])
        if row["kind"] == "ramble":
            assert row["rejected"].startswith(row["chosen"]) and len(row["rejected"]) > 2 * len(row["chosen"])
    assert {r["kind"] for r in rows} == {"wrong", "ramble"}


def _params(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_dpo_trainer_wraps_trl_in_llmtunes_behaviour():
    trl = pytest.importorskip("trl")
    import transformers

    from llmtune.engine.trainer import LlmtuneTrainer
    from llmtune.tasks.dpo_trainer import LlmtuneDPOTrainer

    mro = LlmtuneDPOTrainer.__mro__
    assert mro.index(LlmtuneTrainer) < mro.index(trl.DPOTrainer) < mro.index(transformers.Trainer)
    assert LlmtuneDPOTrainer.args_class is trl.DPOConfig
    # TRL methods overridden (private ones checked against trl 1.16.0) or wrapped by LlmtuneTrainer's overrides.
    private = {n for n, v in vars(LlmtuneDPOTrainer).items() if callable(v) and n.startswith("_") and not n.startswith("__")}
    assert private == {"_prepare_dataset", "_send_telemetry"}
    assert _params(trl.DPOTrainer._prepare_dataset) == ["self", "dataset", "processing_class", "args", "dataset_name"]
    assert _params(trl.DPOTrainer._send_telemetry) == ["self"]
    assert _params(trl.DPOTrainer.compute_loss) == ["self", "model", "inputs", "return_outputs", "num_items_in_batch"]
    assert _params(trl.DPOTrainer._save_checkpoint) == ["self", "model", "trial"]
    assert {"ref_model", "peft_config"} <= set(_params(trl.DPOTrainer.__init__))
