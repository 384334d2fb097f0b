"""`llmtune data clean` on a dirty corpus with known ground truth: precision and recall per stage, and
throughput against a reference pipeline written directly on the same libraries, in one process.

    .venv/bin/python bench/clean.py                  # 300 C4 documents + planted defects, with throughput
    .venv/bin/python bench/clean.py --no-timing      # precision/recall only (not timing-sensitive)
    .venv/bin/python bench/clean.py --docs 120       # smaller

The corpus (bench/_clean_corpus.py) plants exact copies, near copies with 2-10 % of words edited, HTML
pages, boilerplate lines, non-English paragraphs, mojibake and very short documents into real web text.
Scores come from the run's report/removed.jsonl (row, stage, the row a duplicate copies) and the cleaned
text of each kept row. Dedup counts a planted copy as found when it (or its source) is removed as a copy
of the other; a dedup removal is correct when both rows derive from one document or their true Jaccard
(5-word shingles) reaches the threshold. Rows removed by an earlier stage are left out of later stages'
recall.

A second corpus, the near-duplicate probe (``_clean_corpus.near_probe``: the C4 documents plus 150 copies with
0.5-3 % of their words edited), is cleaned with the same settings to read near dedup at Jaccard >= 0.8 on about a
hundred pairs instead of the main corpus's handful (rows ``near_dedup_j08 (probe)``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

from common import Row, Target, format_table, median, say, work_dir

import _clean_corpus as corpus

THRESHOLD = 0.8
REPEATS = 3


def clean_with_llmtune(raw: Path, out: Path, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the runner in this process (as the CLI would); returns clean_report.json."""
    from llmtune.config import load_config
    from llmtune.runs.clean import run

    cfg = load_config("data", None, {"data.dataset": str(raw), "train.output_dir": str(out), "train.overwrite": True},
                      list(overrides))
    run(cfg)
    return json.loads((out / "report" / "clean_report.json").read_text())


def kept_texts(out: Path, n_rows: int) -> tuple[dict[int, str], dict[int, dict]]:
    """Row -> cleaned text for kept rows, row -> removal record for removed rows."""
    removed = {}
    for line in (out / "report" / "removed.jsonl").read_text().splitlines():
        record = json.loads(line)
        removed[record["row"]] = record
    texts = []
    for path in sorted(out.glob("train-*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    kept_rows = [r for r in range(n_rows) if r not in removed]
    assert len(kept_rows) == len(texts), (len(kept_rows), len(texts))
    return dict(zip(kept_rows, texts)), removed


def _matched(record: dict) -> Optional[int]:
    detail = record.get("detail") or ""
    return int(detail.rsplit(" ", 1)[1]) if detail.startswith("copy of row") else None


def _group(row: corpus.Planted) -> Optional[str]:
    return row.doc_id or (row.source if row.kind in ("exact", "near") else None)


def _jaccard(a: str, b: str) -> float:
    from llmtune.data.clean.dedup import shingles

    x, y = set(shingles(a, 5)), set(shingles(b, 5))
    return len(x & y) / max(len(x | y), 1)


def _pr(found: int, eligible: int, correct: int, removed: int) -> tuple[float, float]:
    return found / max(eligible, 1), correct / max(removed, 1)


def score(rows: list[corpus.Planted], kept: dict[int, str], removed: dict[int, dict]) -> dict[str, dict[str, float]]:
    """Precision and recall per stage (see the module docstring)."""
    stage_of = {r: rec["stage"] for r, rec in removed.items()}
    early = {r for r, s in stage_of.items() if s not in ("exact_dedup", "near_dedup")}
    by_doc = {row.doc_id: i for i, row in enumerate(rows) if row.doc_id}
    results: dict[str, dict[str, float]] = {}
    results.update(_score_dedup(rows, removed, stage_of, early, by_doc))
    results.update(_score_filters(rows, stage_of))
    results.update(_score_text(rows, kept))
    return results


def _score_dedup(rows: list[corpus.Planted], removed: dict[int, dict], stage_of: dict[int, str], early: set[int],
                 by_doc: dict[str, int]) -> dict[str, dict[str, float]]:
    results = {}
    for stage, kind in (("exact_dedup", "exact"), ("near_dedup", "near")):
        eligible = found = 0
        found_08 = eligible_08 = 0
        for i, row in enumerate(rows):
            src = by_doc.get(row.source or "")
            if row.kind != kind or src is None or i in early or src in early:
                continue
            hit = (stage_of.get(i, "").endswith("dedup") or
                   (stage_of.get(src, "").endswith("dedup") and _group(rows[_matched(removed[src])]) == row.source))
            eligible += 1
            found += hit
            if kind == "near" and _jaccard(row.text, rows[src].text) >= THRESHOLD:
                eligible_08 += 1
                found_08 += hit
        mine = [r for r, s in stage_of.items() if s == stage]
        correct = sum(1 for r in mine if _group(rows[r]) is not None and _group(rows[r]) == _group(rows[_matched(removed[r])])
                      or _jaccard(rows[r].text, rows[_matched(removed[r])].text) >= THRESHOLD)
        recall, precision = _pr(found, eligible, correct, len(mine))
        results[stage] = {"recall": recall, "precision": precision, "planted": eligible, "removed": len(mine)}
        if kind == "near":
            results["near_dedup_j08"] = {"recall": found_08 / max(eligible_08, 1), "precision": precision,
                                         "planted": eligible_08, "removed": len(mine)}
    return results


def _score_filters(rows: list[corpus.Planted], stage_of: dict[int, str]) -> dict[str, dict[str, float]]:
    results = {}
    for stage, kind in (("length", "short"), ("language", "foreign")):
        planted = [i for i, row in enumerate(rows) if row.kind == kind and (stage_of.get(i) in (None, stage))]
        mine = [r for r, s in stage_of.items() if s == stage]
        found = sum(stage_of.get(i) == stage for i in planted)
        correct = sum(rows[r].kind == kind for r in mine)
        recall, precision = _pr(found, len(planted), correct, len(mine))
        results[stage] = {"recall": recall, "precision": precision, "planted": len(planted), "removed": len(mine)}
    return results


def _score_text(rows: list[corpus.Planted], kept: dict[int, str]) -> dict[str, dict[str, float]]:
    """HTML converted, boilerplate lines dropped, mojibake repaired, judged on the kept rows."""
    from llmtune.config.clean import NormalizeConfig
    from llmtune.data.clean.normalize import normalize_text, words

    def covers(text: str, original: str) -> float:
        want = set(words(normalize_text(original, NormalizeConfig())))
        return len(want & set(words(text))) / max(len(want), 1)

    html = [i for i in kept if rows[i].kind == "html"]
    html_ok = sum("<" not in kept[i] and "Shopcart" not in kept[i] and covers(kept[i], rows[i].original) >= 0.9
                  for i in html)
    moji = [i for i in kept if rows[i].kind == "mojibake"]
    moji_ok = sum(not any(m in kept[i] for m in ("â€", "Ã", "Â")) and covers(kept[i], rows[i].original) >= 0.97
                  for i in moji)
    planted_lines = dropped_planted = dropped_other = 0
    for i, text in kept.items():
        if rows[i].kind in ("html", "mojibake"):
            continue
        out_lines = set(text.split("\n"))
        in_lines = [line for line in normalize_text(rows[i].text, NormalizeConfig()).split("\n") if line.strip()]
        for line in in_lines:
            planted = line in rows[i].planted_lines
            planted_lines += planted
            if line not in out_lines:
                dropped_planted += planted
                dropped_other += not planted
    return {
        "markup": {"recall": html_ok / max(len(html), 1), "precision": float("nan"), "planted": len(html), "removed": 0},
        "mojibake": {"recall": moji_ok / max(len(moji), 1), "precision": float("nan"), "planted": len(moji), "removed": 0},
        "boilerplate": {"recall": dropped_planted / max(planted_lines, 1),
                        "precision": dropped_planted / max(dropped_planted + dropped_other, 1),
                        "planted": planted_lines, "removed": dropped_planted + dropped_other},
    }


def reference_clean(texts: list[str], out: Path) -> int:
    """The same stages called directly on the libraries (no shards, no reports): the speed baseline.

    Returns the number of documents kept.
    """
    import hashlib
    import re
    import unicodedata
    from collections import Counter

    import ftfy
    from datasketch import MinHash, MinHashLSH
    from py3langid.langid import MODEL_FILE, LanguageIdentifier
    from resiliparse.extract.html2text import extract_plain_text

    from llmtune.config.clean import QualityConfig
    from llmtune.data.clean.boilerplate import BUILTIN_PATTERNS
    from llmtune.config.clean import NearDedupConfig
    from llmtune.data.clean.dedup import verify_threshold
    from llmtune.data.clean.filters import quality_reason

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    patterns = [re.compile(p, re.IGNORECASE) for p in BUILTIN_PATTERNS]
    tag = re.compile(r"</?(html|body|div|p|br|nav|main|article)\b[^>]*>", re.IGNORECASE)
    docs = []
    for text in texts:
        text = unicodedata.normalize("NFKC", ftfy.fix_text(text, normalization=None))
        text = "\n".join(" ".join(line.split()) for line in text.split("\n")).strip()
        if len(tag.findall(text)) >= 2:
            text = extract_plain_text(text, main_content=True)
        docs.append(text)
    counts = Counter(k for d in docs for k in {" ".join(l.lower().split()) for l in d.split("\n")} if len(k) >= 10)
    quality = QualityConfig()
    lsh, kept, seen = MinHashLSH(threshold=verify_threshold(NearDedupConfig()), num_perm=128), [], set()
    for i, doc in enumerate(docs):
        lines = [l for l in doc.split("\n") if not (counts[" ".join(l.lower().split())] >= 5 or
                                                   (len(l.split()) <= 20 and any(p.search(l) for p in patterns)))]
        doc = "\n".join(lines).strip()
        tokens = re.findall(r"\w+", doc.lower())
        if not 20 <= len(tokens) <= 200_000:
            continue
        lang, prob = ident.classify(doc[:5000])
        if lang != "en" or prob < 0.5 or quality_reason(doc, quality):
            continue
        key = hashlib.blake2b(" ".join(doc.lower().split()).encode(), digest_size=8).digest()
        if key in seen:
            continue
        seen.add(key)
        grams = {" ".join(tokens[j:j + 5]).encode() for j in range(max(len(tokens) - 4, 1))}
        m = MinHash(num_perm=128)
        m.update_batch(list(grams))
        if lsh.query(m):
            continue
        lsh.insert(i, m)
        kept.append(doc)
    with open(out, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"text": t}) + "\n" for t in kept)
    return len(kept)


def throughput(raw: Path, texts: list[str], n_bytes: int) -> Row:
    """MB/s of llmtune and of the reference, interleaved ``REPEATS`` times; the row's ratio is the median pair ratio."""
    ours, theirs, ratios = [], [], []
    for k in range(REPEATS):
        start = time.perf_counter()
        clean_with_llmtune(raw, work_dir("clean") / f"timed-{k}")
        a = time.perf_counter() - start
        start = time.perf_counter()
        reference_clean(texts, work_dir("clean") / f"reference-{k}.jsonl")
        b = time.perf_counter() - start
        ours.append(n_bytes / 1e6 / a)
        theirs.append(n_bytes / 1e6 / b)
        ratios.append(b / a)
    return Row("clean", "throughput, all stages", median(ours), median(theirs), "MB/s", Target(">=", 0.9, of="ratio"),
               note="reference: the same stages called directly on ftfy/resiliparse/py3langid/datasketch",
               paired_ratio=median(ratios))


def run(quick: bool, docs: Optional[int] = None, timing: bool = True, overrides: tuple[str, ...] = ()) -> list[Row]:
    """Build the corpus, clean it, score each stage; with ``timing``, compare throughput with the reference."""
    n = docs or (120 if quick else 300)
    rows = corpus.build(n)
    raw = corpus.write(rows, work_dir("clean") / f"raw-{n}.jsonl")
    out = work_dir("clean") / f"cleaned-{n}"
    say(f"clean: {len(rows)} rows ({n} C4 documents + planted defects) -> {out}")
    clean_with_llmtune(raw, out, overrides)
    kept, removed = kept_texts(out, len(rows))
    scores = score(rows, kept, removed)
    targets = {"exact_dedup": (1.0, None), "near_dedup_j08": (0.95, 0.99)}
    result = []
    for stage, s in scores.items():
        recall_goal, precision_goal = targets.get(stage, (None, None))
        note = f"{s['planted']} planted, {s['removed']} removed"
        result.append(Row("clean", f"{stage} recall", s["recall"], unit="", note=note,
                          target=Target(">=", recall_goal) if recall_goal else None))
        if s["precision"] == s["precision"]:  # not NaN
            result.append(Row("clean", f"{stage} precision", s["precision"], note=note,
                              target=Target(">=", precision_goal) if precision_goal else None))
    result += probe_rows(n, overrides)
    if timing:
        texts = [r.text for r in rows]
        result.append(throughput(raw, texts, raw.stat().st_size))
    return result


def probe_rows(n: int, overrides: tuple[str, ...]) -> list[Row]:
    """Near dedup recall/precision at Jaccard >= 0.8 on the near-duplicate probe (see the module docstring)."""
    rows = corpus.near_probe(n, copies=n // 2)
    raw = corpus.write(rows, work_dir("clean") / f"probe-{n}.jsonl")
    out = work_dir("clean") / f"probe-cleaned-{n}"
    say(f"clean: near-duplicate probe, {len(rows)} rows -> {out}")
    clean_with_llmtune(raw, out, overrides)
    kept, removed = kept_texts(out, len(rows))
    s = score(rows, kept, removed)["near_dedup_j08"]
    pairs = [(r, _matched(rec)) for r, rec in removed.items() if rec["stage"] == "near_dedup"]
    lowest = min((_jaccard(rows[a].text, rows[b].text) for a, b in pairs), default=float("nan"))
    distinct = sum(_group(rows[a]) != _group(rows[b]) for a, b in pairs)
    note = (f"{s['planted']} pairs at Jaccard >= {THRESHOLD}; {s['removed']} removed by near dedup, lowest true "
            f"Jaccard of a removed pair {lowest:.2f}, {distinct} of them not copies of one document")
    return [Row("clean", "near_dedup_j08 (probe) recall", s["recall"], unit="", note=note, target=Target(">=", 0.95)),
            Row("clean", "near_dedup_j08 (probe) precision", s["precision"], unit="", note=note,
                target=Target(">=", 0.99))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=300, help="C4 documents to build the corpus from (at most 300).")
    parser.add_argument("--no-timing", action="store_true", help="Precision/recall only.")
    parser.add_argument("--set", action="append", default=[], help="Config override for llmtune's run (repeatable).")
    args = parser.parse_args()
    rows = run(quick=False, docs=args.docs, timing=not args.no_timing, overrides=tuple(args.set))
    print(format_table(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
