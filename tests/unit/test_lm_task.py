"""Language-model task: packing, cache reuse, masking and the sample prompt, on hand-checkable tokenizers."""

import os

import pytest

from llmtune.errors import ConfigError, ModelError
from llmtune.tasks.lm import LanguageModelTask, check_tokenizer, pack_blocks, text_units_per_token

WORDS = ["the", "cat", "sat", "dog", "ran", "café"]
CAUSAL_SPECIALS = {"eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
MASKED_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                   "mask_token": "[MASK]"}


def word_tokenizer(specials: dict[str, str], words: list[str] = WORDS):
    """One token per whitespace-separated word: ids are the specials in order, then ``words``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*specials.values(), *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=specials["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **specials)


@pytest.fixture(scope="module")
def causal_tok():
    return word_tokenizer(CAUSAL_SPECIALS)


@pytest.fixture(scope="module")
def masked_tok():
    return word_tokenizer(MASKED_SPECIALS)


def ids(tok, words: str) -> list[int]:
    return tok.convert_tokens_to_ids(words.split())


def test_causal_blocks_are_documents_joined_by_eos_with_the_tail_dropped(causal_tok):
    batch = {"text": ["the cat sat", "", "   ", "the dog ran", "cat"]}
    out = pack_blocks(batch, causal_tok, block_size=4)
    eos = causal_tok.eos_token_id
    # stream: the cat sat <eos> the dog ran <eos> cat <eos>  (10 tokens) -> 2 blocks of 4, tail of 2 dropped
    assert out["input_ids"] == [[*ids(causal_tok, "the cat sat"), eos], [*ids(causal_tok, "the dog ran"), eos]]
    # chars: (11 + 1) + (11 + 1) + (3 + 1) = 28 over 10 tokens = 2.8 per token; blank rows count nothing
    assert out["n_chars"] == pytest.approx([4 * 2.8, 4 * 2.8])
    assert out["n_bytes"] == pytest.approx([4 * 2.8, 4 * 2.8])


def test_block_shares_of_chars_and_bytes_differ_for_non_ascii_text(causal_tok):
    out = pack_blocks({"text": ["café café", "the cat"]}, causal_tok, block_size=3)
    # stream: café café <eos> the cat <eos> (6 tokens) -> 2 blocks; chars 10 + 8 = 18, bytes 12 + 8 = 20
    assert len(out["input_ids"]) == 2
    assert sum(out["n_chars"]) == pytest.approx(18)
    assert sum(out["n_bytes"]) == pytest.approx(20)


def test_masked_blocks_use_sep_between_documents_and_are_wrapped_in_cls_sep(masked_tok):
    out = pack_blocks({"text": ["the cat sat", "the dog ran", "cat"]}, masked_tok, block_size=5, masked=True)
    cls, sep = masked_tok.cls_token_id, masked_tok.sep_token_id
    the, cat, sat, dog, ran = ids(masked_tok, "the cat sat dog ran")
    # stream: the cat sat [SEP] the dog ran [SEP] cat [SEP] -> 3 inner blocks of 5 - 2 = 3, tail [SEP] dropped
    assert out["input_ids"] == [[cls, the, cat, sat, sep], [cls, sep, the, dog, sep], [cls, ran, sep, cat, sep]]
    assert len(out["n_chars"]) == 3


def test_a_batch_of_blank_rows_packs_to_nothing(causal_tok):
    assert pack_blocks({"text": ["", "  ", None]}, causal_tok, block_size=4) == {
        "input_ids": [], "n_chars": [], "n_bytes": []}


def test_text_units_per_token_sums_over_blocks(causal_tok):
    from datasets import Dataset

    blocks = Dataset.from_dict(pack_blocks({"text": ["the cat sat", "the dog ran", "cat"]}, causal_tok, block_size=4))
    assert text_units_per_token(blocks, 4) == pytest.approx({"chars_per_token": 2.8, "bytes_per_token": 2.8})


def test_tokenizers_without_the_needed_special_tokens_are_refused(causal_tok, masked_tok):
    with pytest.raises(ModelError, match="no cls_token, sep_token, mask_token"):
        check_tokenizer(causal_tok, masked=True)
    with pytest.raises(ModelError, match="no eos_token"):
        check_tokenizer(masked_tok, masked=False)
    check_tokenizer(causal_tok, masked=False)
    check_tokenizer(masked_tok, masked=True)


@pytest.mark.parametrize("probability", [0.0, 1.0, 1.5])
def test_mlm_probability_must_be_a_fraction(probability):
    with pytest.raises(ConfigError, match="mlm_probability"):
        LanguageModelTask(masked=True, mlm_probability=probability)


def test_masking_follows_mlm_probability_and_never_masks_cls_or_sep(masked_tok):
    import torch

    torch.manual_seed(0)
    rows = pack_blocks({"text": ["the cat sat the dog ran"] * 200}, masked_tok, block_size=32, masked=True)
    features = [{"input_ids": block} for block in rows["input_ids"]]
    batch = LanguageModelTask(masked=True, mlm_probability=0.5).collator(masked_tok)(features)
    chosen = batch["labels"] != -100
    specials = (batch["labels"] == masked_tok.cls_token_id) | (batch["labels"] == masked_tok.sep_token_id)
    separators = {masked_tok.cls_token_id, masked_tok.sep_token_id}
    words = sum(token not in separators for block in rows["input_ids"] for token in block)
    assert 0.45 < chosen.sum().item() / words < 0.55
    assert not specials.any(), "[CLS]/[SEP] must never be prediction targets"


@pytest.fixture
def on_disk_text(tmp_path):
    """An Arrow-backed dataset (has cache files, like every loaded local file)."""
    from datasets import Dataset, load_from_disk

    Dataset.from_dict({"text": ["the cat sat", "the dog ran", "cat sat"] * 50}).save_to_disk(str(tmp_path / "ds"))
    return load_from_disk(str(tmp_path / "ds"))


def _cache(blocks) -> tuple[str, float]:
    [entry] = blocks.cache_files
    return entry["filename"], os.path.getmtime(entry["filename"])


def test_packing_is_cached_by_data_and_tokenizer_content(on_disk_text, causal_tok, tmp_path):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    task = LanguageModelTask(masked=False)
    first = _cache(task.preprocess(on_disk_text, causal_tok, 8))
    # The same data reloaded and the same vocabulary reloaded from a folder: loaded, not tokenized again.
    causal_tok.save_pretrained(str(tmp_path / "tok"))
    reloaded_tok = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    again = task.preprocess(load_from_disk(str(tmp_path / "ds")), reloaded_tok, 8)
    assert _cache(again) == first
    # Any change that alters the blocks writes a new cache file.
    other_words = word_tokenizer(CAUSAL_SPECIALS, ["dog", *WORDS])
    changed = {
        "block size": task.preprocess(on_disk_text, causal_tok, 4),
        "tokenizer": task.preprocess(on_disk_text, other_words, 8),
        "data": task.preprocess(on_disk_text.select(range(10)), causal_tok, 8),
    }
    for what, blocks in changed.items():
        assert _cache(blocks)[0] != first[0], f"a different {what} must not reuse the cache"
    assert os.path.getmtime(first[0]) == first[1]


def test_sample_prompt_stops_before_a_word_starts_and_never_crosses_eos():
    from llmtune.config.schema import TokenizerConfig
    from llmtune.engine.samples import sample_prompt
    from llmtune.tokenizer import train_tokenizer

    tok = train_tokenizer(["the quick brown fox jumps over the lazy dog"] * 20, TokenizerConfig(vocab_size=400))
    block = tok("the quick brown fox jumps")["input_ids"] + [tok.eos_token_id] + tok("over")["input_ids"]
    assert tok.decode(sample_prompt(block, tok, n_tokens=3)) == "the quick brown"
    assert tok.decode(sample_prompt(block, tok, n_tokens=50)) == "the quick brown fox"
    assert sample_prompt([5, 6, 7], word_tokenizer(CAUSAL_SPECIALS), n_tokens=2) == [5, 6]


def test_max_new_tokens_fits_the_model_positions():
    from transformers import GPT2Config

    from llmtune.engine.samples import max_new_tokens

    assert max_new_tokens(GPT2Config(n_positions=32), prompt_len=8, wanted=40) == 24
    assert max_new_tokens(GPT2Config(n_positions=1024), prompt_len=8, wanted=40) == 40
    assert max_new_tokens(GPT2Config(n_positions=8), prompt_len=8, wanted=40) == 0
