"""A dirty corpus with known ground truth for bench/clean.py, built from real web text.

Base documents are the C4 sample in ``../shared/datasets/web-c4-sample`` (Raffel et al. 2020, ODC-BY). Each
planted defect is a new row whose kind and source are recorded: exact copies (verbatim, or re-cased and
re-spaced), near copies (2-10 % of words replaced), HTML pages wrapping a held-out document, documents
with boilerplate lines added, non-English paragraphs (written for this benchmark), mojibake (a held-out
document's UTF-8 bytes read as cp1252) and very short documents. Rows are shuffled with a fixed seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from common import REPO_DIR

C4 = REPO_DIR.parent / "shared" / "datasets" / "web-c4-sample" / "train.jsonl"
EDIT_RATES = (0.02, 0.04, 0.06, 0.08, 0.10)
PROBE_RATES = (0.005, 0.01, 0.015, 0.02, 0.03)  # near copies most of which reach Jaccard 0.8 (see near_probe)
PATTERN_LINES = ("Accept all cookies", "Share on Facebook Twitter Pinterest", "Skip to main content",
                 "Click here to subscribe to our newsletter", "Log in | Sign up")
REPEATED_LINE = "Posted in Uncategorized by admin | Leave a comment"
NAV = "<nav><a href='/'>Home</a> | <a href='/shop'>Shopcart</a> | <a href='/blog'>Blogroll</a></nav>"
FOREIGN = [
    ("fr", "Le petit village se trouve au bord de la rivière, entre les collines et la forêt. Chaque samedi, les "
           "habitants se retrouvent sur la place du marché pour acheter du pain, du fromage et des légumes frais. "
           "Les enfants jouent près de la fontaine pendant que leurs parents discutent du temps qu'il fait."),
    ("fr", "Depuis plusieurs années, la bibliothèque municipale propose des ateliers d'écriture pour les adultes. "
           "Les participants lisent leurs textes à voix haute et reçoivent les conseils d'un auteur invité. "
           "Cette initiative a beaucoup de succès et attire des personnes de toute la région."),
    ("de", "Das kleine Dorf liegt am Ufer des Flusses, zwischen den Hügeln und dem Wald. Jeden Samstag treffen "
           "sich die Bewohner auf dem Marktplatz, um Brot, Käse und frisches Gemüse zu kaufen. Die Kinder spielen "
           "am Brunnen, während ihre Eltern über das Wetter sprechen."),
    ("de", "Seit einigen Jahren bietet die Stadtbibliothek Schreibwerkstätten für Erwachsene an. Die Teilnehmer "
           "lesen ihre Texte laut vor und bekommen Ratschläge von einem eingeladenen Autor. Das Angebot ist sehr "
           "beliebt und zieht Menschen aus der ganzen Gegend an."),
    ("es", "El pequeño pueblo se encuentra a orillas del río, entre las colinas y el bosque. Cada sábado, los "
           "vecinos se reúnen en la plaza del mercado para comprar pan, queso y verduras frescas. Los niños juegan "
           "cerca de la fuente mientras sus padres hablan del tiempo."),
    ("es", "Desde hace varios años, la biblioteca municipal ofrece talleres de escritura para adultos. Los "
           "participantes leen sus textos en voz alta y reciben los consejos de un autor invitado. La iniciativa "
           "tiene mucho éxito y atrae a personas de toda la región."),
    ("it", "Il piccolo paese si trova sulla riva del fiume, tra le colline e il bosco. Ogni sabato gli abitanti si "
           "incontrano nella piazza del mercato per comprare pane, formaggio e verdure fresche. I bambini giocano "
           "vicino alla fontana mentre i genitori parlano del tempo."),
    ("it", "Da alcuni anni la biblioteca comunale organizza laboratori di scrittura per adulti. I partecipanti "
           "leggono i loro testi ad alta voce e ricevono i consigli di un autore invitato. L'iniziativa ha molto "
           "successo e attira persone da tutta la regione."),
    ("nl", "Het kleine dorp ligt aan de oever van de rivier, tussen de heuvels en het bos. Elke zaterdag komen de "
           "bewoners samen op het marktplein om brood, kaas en verse groenten te kopen. De kinderen spelen bij de "
           "fontein terwijl hun ouders over het weer praten."),
    ("nl", "Al een paar jaar organiseert de openbare bibliotheek schrijfworkshops voor volwassenen. De deelnemers "
           "lezen hun teksten hardop voor en krijgen advies van een uitgenodigde schrijver. Het initiatief is erg "
           "populair en trekt mensen uit de hele regio."),
    ("pt", "A pequena aldeia fica na margem do rio, entre as colinas e a floresta. Todos os sábados, os moradores "
           "encontram-se na praça do mercado para comprar pão, queijo e legumes frescos. As crianças brincam perto "
           "da fonte enquanto os pais conversam sobre o tempo."),
    ("pt", "Há alguns anos, a biblioteca municipal oferece oficinas de escrita para adultos. Os participantes leem "
           "os seus textos em voz alta e recebem conselhos de um autor convidado. A iniciativa tem muito sucesso e "
           "atrai pessoas de toda a região."),
]


@dataclass
class Planted:
    """One row of the benchmark corpus and what it is."""

    text: str
    kind: str  # base, exact, near, html, boilerplate, foreign, mojibake, short
    source: Optional[str] = None  # id of the base document it derives from
    doc_id: Optional[str] = None  # id of a base document (kind base/boilerplate)
    original: Optional[str] = None  # html/mojibake: the clean text it was made from
    edit_rate: float = 0.0
    planted_lines: list[str] = field(default_factory=list)


def load_c4(limit: int) -> list[str]:
    """The first ``limit`` documents of the C4 sample."""
    with open(C4, encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh][:limit]


def edit_words(text: str, rate: float, vocab: list[str], rng: random.Random) -> str:
    """Replace ``rate`` of the words (at least one) with random words from ``vocab``, keeping line breaks."""
    lines = [line.split(" ") for line in text.split("\n")]
    positions = [(i, j) for i, line in enumerate(lines) for j in range(len(line))]
    for i, j in rng.sample(positions, max(1, round(rate * len(positions)))):
        lines[i][j] = rng.choice(vocab)
    return "\n".join(" ".join(line) for line in lines)


def html_page(text: str) -> str:
    """``text`` as the main content of a page with head, navigation, scripts and a footer."""
    paragraphs = "".join(f"<p>{p}</p>" for p in text.split("\n") if p.strip())
    return (f"<!DOCTYPE html><html><head><title>Page</title><script>var tracking = 1;</script></head><body>"
            f"{NAV}<main><article>{paragraphs}</article></main><footer>Copyright 2019 Example Media, all rights "
            f"reserved</footer></body></html>")


def build(n_docs: int, seed: int = 0) -> list[Planted]:
    """The shuffled benchmark corpus from ``n_docs`` C4 documents (see the module docstring)."""
    rng = random.Random(seed)
    docs = load_c4(n_docs)
    order = list(range(len(docs)))
    rng.shuffle(order)
    with_unicode = [i for i in order if any(ord(ch) > 127 for ch in docs[i])]
    n = len(docs)
    moji_ids = with_unicode[: n // 10]
    rest = [i for i in order if i not in set(moji_ids)]
    html_ids, rest = rest[: n // 10], rest[n // 10:]
    boiler_ids, base_ids = rest[: n // 10], rest[n // 10:]
    rows = [Planted(docs[i], "base", doc_id=f"d{i}") for i in base_ids]
    for i in boiler_ids:
        lines = docs[i].split("\n")
        extra = [rng.choice(PATTERN_LINES), REPEATED_LINE]
        text = "\n".join([extra[0]] + lines + [extra[1]])
        rows.append(Planted(text, "boilerplate", doc_id=f"d{i}", planted_lines=extra))
    vocab = [w for i in base_ids for w in docs[i].split()][:50_000]
    copy_ids = base_ids + boiler_ids
    for k in range(n // 10):
        i = rng.choice(copy_ids)
        text = docs[i] if k % 2 == 0 else "  ".join(docs[i].upper().split(" "))
        rows.append(Planted(text, "exact", source=f"d{i}"))
    for k in range(n * 15 // 100):
        i, rate = rng.choice(base_ids), EDIT_RATES[k % len(EDIT_RATES)]
        rows.append(Planted(edit_words(docs[i], rate, vocab, rng), "near", source=f"d{i}", edit_rate=rate))
    rows += [Planted(html_page(docs[i]), "html", original=docs[i]) for i in html_ids]
    rows += [Planted(docs[i].encode("utf-8").decode("cp1252", errors="ignore"), "mojibake", original=docs[i])
             for i in moji_ids]
    rows += [Planted(text, "foreign", source=lang) for lang, text in FOREIGN]
    for _ in range(n // 10):
        words = docs[rng.choice(base_ids)].split()
        rows.append(Planted(" ".join(words[: rng.randint(3, 15)]), "short"))
    rng.shuffle(rows)
    return rows


def near_probe(n_docs: int, copies: int, seed: int = 1) -> list[Planted]:
    """``n_docs`` C4 documents plus ``copies`` near copies with 0.5-3 % of words edited, shuffled.

    The main corpus has only a few pairs at Jaccard >= 0.8 (its copies are edited 2-10 %); this one holds about a
    hundred, enough to read near dedup's recall at that threshold to the percent.
    """
    rng = random.Random(seed)
    docs = load_c4(n_docs)
    rows = [Planted(text, "base", doc_id=f"d{i}") for i, text in enumerate(docs)]
    vocab = [w for text in docs for w in text.split()][:50_000]
    for k in range(copies):
        i, rate = rng.randrange(len(docs)), PROBE_RATES[k % len(PROBE_RATES)]
        rows.append(Planted(edit_words(docs[i], rate, vocab, rng), "near", source=f"d{i}", edit_rate=rate))
    rng.shuffle(rows)
    return rows


def write(rows: list[Planted], path: Path) -> Path:
    """The corpus as JSON Lines with a ``text`` column (ground truth stays in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({"text": row.text}, ensure_ascii=False) + "\n")
    return path
