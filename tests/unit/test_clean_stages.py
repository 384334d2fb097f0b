"""`llmtune data clean` stages on hand-made documents whose outcome is known in advance."""

from pathlib import Path

import pytest

from llmtune.config.clean import BoilerplateConfig, CleanConfig, MarkupConfig, NormalizeConfig, PiiConfig, QualityConfig
from llmtune.data.clean import boilerplate, filters, normalize, pii
from llmtune.data.clean.decontam import contaminated, load_eval_ngrams
from llmtune.data.clean.dedup import shingles, verify_threshold
from llmtune.data.clean.stages import STAGES, clean_shard

PROSE = Path(__file__).resolve().parents[2] / "llmtune" / "data" / "builtin" / "text" / "train.txt"


def prose(n: int, start: int = 0) -> list[str]:
    """``n`` distinct English paragraphs of about 90 words (the builtin prose)."""
    return PROSE.read_text(encoding="utf-8").split("\n")[start: start + n]


def only(**stages: bool) -> CleanConfig:
    """A config with every stage off except those named (``near_dedup=True`` ...)."""
    cfg = CleanConfig()
    for name in ("normalize", "markup", "boilerplate", "length", "language", "quality", "pii", "exact_dedup", "near_dedup"):
        getattr(cfg, name).enabled = stages.get(name, False)
    return cfg


def test_mojibake_control_characters_and_whitespace_are_repaired():
    text = "The Mona Lisa doesnâ€™t have eyebrows.\x00\x07  Caf\u00c3\u00a9   au lait\r\n\n\n\nNext   line  "
    assert normalize.normalize_text(text, NormalizeConfig()) == "The Mona Lisa doesn’t have eyebrows. Café au lait\n\nNext line"
    straight = NormalizeConfig(uncurl_quotes=True)
    assert normalize.normalize_text(text, straight) == "The Mona Lisa doesn't have eyebrows. Café au lait\n\nNext line"


def test_nfkc_folds_compatibility_characters():
    assert normalize.normalize_text("ﬁne ① ｆｕｌｌ", NormalizeConfig()) == "fine 1 full"


def test_html_becomes_its_main_text():
    page = ("<!doctype html><html><head><title>t</title><script>var x = 1;</script></head><body>"
            "<nav><a href='/'>Home</a> <a href='/about'>About us</a></nav><main><h1>Bird notes</h1>"
            "<p>The goose lives in the fields around the town.</p><p>It eats grain and roots.</p></main>"
            "<footer>Copyright 2020 Example Inc.</footer></body></html>")
    assert normalize.is_markup(page, 2)
    assert normalize.markup_to_text(page, MarkupConfig()) == (
        "Bird notes\n\nThe goose lives in the fields around the town.\n\nIt eats grain and roots.")


def test_prose_mentioning_a_tag_is_not_markup():
    assert not normalize.is_markup("if a < b and b > c then write <p> in the page", 2)


def test_boilerplate_pattern_lines_and_lines_repeated_across_documents_are_dropped():
    cfg = BoilerplateConfig(min_repeat_docs=3)
    docs = [f"Story number {i} is about a goose.\nPosted by the site admin team\nWe use cookies. Accept all"
            for i in range(3)] + ["A lone story.\nPosted by the site admin team"]
    repeated = boilerplate.repeated_lines(docs, cfg)
    assert repeated == {"posted by the site admin team", "we use cookies. accept all"}
    patterns = boilerplate.compile_patterns(cfg)
    assert boilerplate.remove_boilerplate(docs[0], patterns, repeated, cfg) == ("Story number 0 is about a goose.", 2)
    # A long line that mentions cookies is content, not a banner.
    long_line = "My grandmother baked cookies every Sunday and " + "we ate them in the garden " * 4
    assert boilerplate.remove_boilerplate(long_line, patterns, set(), cfg) == (long_line, 0)


def test_language_filter_drops_german_and_keeps_english():
    cfg = CleanConfig().language
    english, german = prose(1)[0], "Der Hund läuft jeden Morgen schnell über die Straße und bellt laut, weil er die Katze sieht."
    assert filters.language_reason(english, cfg) is None
    assert filters.language_reason(german, cfg) == "language_de"


def test_quality_stats_on_hand_counted_text():
    stats = filters.quality_stats("the cat ...\n# the cat\n# the cat")
    assert stats["symbol_word_ratio"] == pytest.approx(3 / 9)  # '...', '#', '#' over 9 words
    assert stats["duplicate_lines"] == pytest.approx(1 / 3)
    assert stats["ellipsis_lines"] == pytest.approx(1 / 3)
    assert filters.top_ngram_fraction(["ab", "c", "ab", "c"], 2) == pytest.approx(6 / 6)
    assert filters.duplicate_ngram_fraction(["a", "b", "a", "b", "zz"], 2) == pytest.approx(4 / 6)
    assert filters.quality_reason("the cat ...\n# the cat\n# the cat", QualityConfig()) == "symbol_word_ratio"
    assert filters.quality_reason(prose(1)[0], QualityConfig()) is None


def test_pii_is_masked_and_plain_numbers_are_not():
    text = "Mail bob.smith@example.com or call +1 555-123-4567 from 192.168.0.1; born in 1984, paid 250."
    masked, count = pii.mask_pii(text, PiiConfig(enabled=True))
    assert masked == "Mail <EMAIL> or call <PHONE> from <IP_ADDRESS>; born in 1984, paid 250."
    assert count == 3


def test_decontamination_finds_a_shared_13_gram_but_not_a_12_gram(tmp_path):
    question = "what is the name of the rare bird that lives in the fields around germere today"
    (tmp_path / "eval.jsonl").write_text('{"question": "' + question + '", "answer": 3}\n')
    grams = load_eval_ngrams([str(tmp_path / "eval.jsonl")], 13)
    thirteen = " ".join(question.split()[:13])
    twelve = " ".join(question.split()[:12])
    assert contaminated(f"Intro. {thirteen.upper()}! More.", grams, 13) == thirteen
    assert contaminated(f"Intro. {twelve} and something else entirely.", grams, 13) is None


def test_exact_duplicates_are_all_removed_and_near_copies_too():
    docs = prose(6)
    docs[0] = docs[0] + " " + docs[3]  # 117 words, 110 distinct five-word shingles
    base = docs[0].split()
    near = " ".join(w if i not in (40, len(base) - 1) else "zebra" for i, w in enumerate(base))
    # 2 of 117 words changed: 6 of 110 shingles differ, Jaccard 104/116 = 0.90 (threshold 0.8).
    assert len(set(shingles(near, 5)) & set(shingles(docs[0], 5))) == 104
    assert len(set(shingles(near, 5)) | set(shingles(docs[0], 5))) == 116
    corpus = [docs[0], docs[1], docs[0], docs[0].upper(), near, docs[2], docs[1]]
    result = clean_shard(list(enumerate(corpus)), only(exact_dedup=True, near_dedup=True))
    assert [row for row, _ in result.kept] == [0, 1, 5]
    assert dict(result.stats["exact_dedup"].removed) == {"duplicate": 3}
    assert dict(result.stats["near_dedup"].removed) == {"duplicate": 1}
    assert result.stats["near_dedup"].examples["duplicate"][0] == {"row": 4, "text": near[:300], "detail": "copy of row 0"}


def _jaccard(a: str, b: str) -> float:
    x, y = set(shingles(a, 5)), set(shingles(b, 5))
    return len(x & y) / len(x | y)


def test_near_dedup_verification_margin_is_1_645_standard_deviations():
    # 0.8 - 1.645 * sqrt(0.8 * 0.2 / 128) = 0.8 - 1.645 * 0.035355 = 0.74184
    assert verify_threshold(CleanConfig().near_dedup) == pytest.approx(0.74184, abs=1e-5)
    cfg = CleanConfig().near_dedup.model_copy(update={"threshold": 0.6, "num_perm": 256})
    assert verify_threshold(cfg) == pytest.approx(0.6 - 1.645 * (0.24 / 256) ** 0.5, abs=1e-9)


def test_near_copies_just_above_the_threshold_are_caught_whatever_the_minhash_seed():
    docs = prose(6)
    base = (docs[0] + " " + docs[3]).split()  # 117 words, 110 distinct five-word shingles
    near = " ".join("zebra" if i in (30, 70) else w for i, w in enumerate(base))
    far = " ".join("zebra" if i % 14 == 7 else w for i, w in enumerate(base))
    assert _jaccard(near, " ".join(base)) == pytest.approx(102 / 120)  # Jaccard 0.85
    assert _jaccard(far, " ".join(base)) < 0.5
    caught = {"near": 0, "far": 0}
    for seed in range(1, 21):
        cfg = only(near_dedup=True)
        cfg.near_dedup.seed = seed
        for name, copy in (("near", near), ("far", far)):
            result = clean_shard([(0, " ".join(base)), (1, copy)], cfg)
            caught[name] += len(result.kept) == 1
    # The 128-value estimates of this pair over seeds 1-20 range 0.781-0.898: checked against 0.8 itself, seeds
    # with 0.781 and 0.797 would keep the copy; against 0.742 every seed removes it.
    assert caught == {"near": 20, "far": 0}


def test_stage_counts_chain_and_each_defect_lands_in_its_stage():
    docs = prose(5)
    corpus = [
        docs[0],
        "<html><body><p>" + docs[1] + "</p><p>Accept all cookies</p></body></html>",
        "Der Hund läuft jeden Morgen schnell über die Straße und bellt laut, weil er die Katze im Garten "
        "sieht und sie jagen will, aber sie ist viel zu schnell für ihn und klettert auf den Baum.",
        "too short to keep",
        docs[0],
        docs[2].replace("'", "â€™") if "'" in docs[2] else docs[2] + " It doesnâ€™t matter.",
    ]
    result = clean_shard(list(enumerate(corpus)), CleanConfig())
    stats = result.stats
    assert list(stats) == list(STAGES)
    for before, after in zip(STAGES, STAGES[1:]):
        assert stats[before].docs_out == stats[after].docs_in
        assert stats[before].chars_out == stats[after].chars_in
    assert dict(stats["language"].removed) == {"language_de": 1}
    assert dict(stats["length"].removed) == {"too_short": 1}
    assert dict(stats["exact_dedup"].removed) == {"duplicate": 1}
    kept = dict(result.kept)
    assert sorted(kept) == [0, 1, 5]
    assert kept[1] == docs[1]  # HTML converted and the cookie line gone
    assert "â€" not in kept[5] and "’" in kept[5]  # the mojibake repaired to the curly quote it was (kept)
