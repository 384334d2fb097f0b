"""`chat_template.prepare_chat` / `render_chat`: the one chat renderer of `generate --chat` and `serve`."""

import pytest

from llmtune.chat_template import ROLE_MARKERS, prepare_chat, render_chat, uses_builtin_template


@pytest.fixture
def tok():
    """A fresh character tokenizer (one token per character) without a chat template; bos <|endoftext|>."""
    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    return train_tokenizer(["<|system|> <|user|> <|assistant|> hi yo ok\n"],
                           TokenizerConfig(type="char", vocab_size=60, min_frequency=1, model_max_length=256))


def test_prepare_chat_installs_the_builtin_template_once_and_returns_its_role_markers(tok, capsys):
    assert tok.chat_template is None
    assert prepare_chat(tok) == ["<|system|>", "<|user|>", "<|assistant|>"] == list(ROLE_MARKERS.values())
    assert uses_builtin_template(tok) and "builtin" in capsys.readouterr().err
    assert prepare_chat(tok) == []  # the template is there now: nothing installed, no extra stops


def test_prepare_chat_keeps_a_tokenizers_own_template(tok):
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert prepare_chat(tok) == [] and not uses_builtin_template(tok)


def test_render_chat_is_the_template_text_tokenized_without_added_special_tokens(tok):
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "ok"}]
    ids = render_chat(tok, chat)  # installs the builtin template by itself
    text = "<|user|>\nhi\n<|assistant|>\nyo<|endoftext|>\n<|user|>\nok\n<|assistant|>\n"
    assert tok.decode(ids) == text
    # one id per character, except eos ("<|endoftext|>", one added token): 9+3+14+16+9+3+14 = 68 characters - 13 + 1
    assert len(ids) == len(text) - len("<|endoftext|>") + 1 == 56


def test_render_chat_adds_no_bos_of_its_own(tok):
    """A template that writes bos itself must not get a second one from the tokenizer's post-processor."""
    tok.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    ids = render_chat(tok, [{"role": "user", "content": "hi"}])
    assert ids == [tok.bos_token_id, *tok("hi", add_special_tokens=False)["input_ids"]] and len(ids) == 3


def test_render_chat_passes_template_errors_on(tok):
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(Exception, match="roles must alternate"):
        render_chat(tok, [{"role": "user", "content": "hi"}])
