"""Synthetic *books* in MUSE's layout: the copyrighted-text benchmark's data, made from a seed.

Real MUSE-News / MUSE-Books and Harry Potter text cannot ship. `generate_books(BooksConfig())`
writes novels instead: chapters of prose about invented characters who live in the synthetic
world's countries and cities (the same `generate_world` places, capitals and languages), each book
with a story bible of facts (hero, home town, companion and trade, animal, quest object,
destination, rival, year) that its chapters state and its KnowMem questions ask about.

`write_books(out_dir, config)` writes muse_bench's local layout, so `uld eval --task muse` (and
muse_bench itself) reads it as it reads MUSE-News:

    raw/{forget,retain1,retain2,holdout}.json (+ .txt)   chapters (one document each)
    verbmem/forget.json      [{"prompt", "gt"}]          passages of forget chapters, cut in two
    knowmem/{forget,retain}_qa.json, *_qa_icl.json       [{"question", "answer"}] about the books
    privleak/{forget,retain,holdout}.json                chapters (members / non-members)

plus `train_qa/{forget,retain}.json` (the books' facts asked in other words than KnowMem's, for
training the models on the QA format), the copyright task's files (`copyright/ppl.json`: held-out prose about the world's
countries; `copyright/mc/*.json`: multiple-choice questions on its general knowledge) and ULD's
training augmentation `augment/forget_paraphrased.json`: each forget chapter retold twice with
other sentences (the paper's paraphrased passages). `check_no_leak` (run by the generator, and by
a test) guarantees that no evaluation string -- a VerbMem prompt or continuation, a KnowMem
question, or any 8-word window of them -- occurs in the augmentation.

Everything follows from `random.Random` instances seeded from the config: same config, same bytes.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from uld.errors import UldError
from uld.io import atomic_dir
from uld.world import vocab as V
from uld.world.config import WorldConfig
from uld.world.generate import generate_world

OBJECTS = ("compass", "lantern", "key", "map", "violin", "mirror", "bell", "clock", "feather", "ring", "letter", "crown")
MATERIALS = ("silver", "copper", "glass", "oak", "iron", "ivory", "brass", "amber")
WEATHER = ("rain", "fog", "snow", "wind", "heat", "frost", "thunder", "mist")
TIMES = ("dawn", "noon", "dusk", "midnight", "morning", "evening")
LEAK_WORDS = 8


@dataclass(frozen=True)
class BooksConfig:
    """Sizes and seed of the synthetic books; the defaults train in minutes on a 2-core CPU."""

    seed: int = 0
    """Seed of every choice (the world's places come from `generate_world(WorldConfig(seed))`)."""
    forget_books: int = 4
    """Books to forget (MUSE-Books: the Harry Potter books)."""
    retain_books: int = 8
    """Books kept (split between raw/retain1 and raw/retain2)."""
    holdout_books: int = 4
    """Books never trained on (PrivLeak's non-members)."""
    chapters: int = 3
    """Chapters per book; a chapter is one document."""
    verbmem_prompt_words: int = 24
    """Words of a VerbMem prompt (MUSE uses longer excerpts; scaled to the miniature)."""
    verbmem_gt_words: int = 24
    """Words of a VerbMem true continuation."""
    icl_examples: int = 3
    """In-context QA examples for KnowMem (from facts not asked about)."""
    paraphrases: int = 2
    """Retellings of each forget chapter in the training augmentation (ULD paper: 2)."""

    def __post_init__(self) -> None:
        if min(self.forget_books, self.retain_books, self.holdout_books, self.chapters, self.paraphrases) < 1:
            raise UldError("books, chapters and paraphrases must each be at least 1")
        if self.retain_books < 2:
            raise UldError(f"retain_books must be at least 2 (retain1 and retain2), got {self.retain_books}")


@dataclass
class Book:
    title: str
    facts: dict[str, str]
    chapters: list[str]
    retellings: list[list[str]]  # [paraphrase][chapter]


# Chapter sentences: (facts each needs, original wording, retelling wordings). The retellings use
# other words so that they state the same facts without repeating the original's sentences.
_BEATS = (
    ("{hero} lived in {home}, a town of {country} where the people spoke {language}.",
     ("The town of {home} in {country} was where {hero} made a home, and {language} was heard in every street.",
      "Home for {hero} was {home}; that part of {country} talks in {language}.")),
    ("{hero} worked as a {trade} like {poss} mother before {obj_pron}.",
     ("Like {poss} mother, {hero} earned a living as a {trade}.",
      "The trade of {hero} was that of a {trade}, learnt from {poss} mother.")),
    ("In the year {year} a stranger brought {obj_pron} news of the {material} {object}.",
     ("News of a {object} made of {material} reached {hero} in {year}, carried by a stranger.",
      "It was {year} when {hero} first heard, from a traveller, about the {object} of {material}.")),
    ("{hero} set out with {companion}, a {companion_trade} who never stopped talking.",
     ("{companion}, a talkative {companion_trade}, went with {hero} on the road.",
      "The road was shared with {companion}, who was a {companion_trade} and a chatterbox.")),
    ("A {animal} called {pet} followed them from the first day.",
     ("From the very start they were followed by {pet}, a {animal}.",
      "Their {animal}, whose name was {pet}, kept close behind them.")),
    ("The road led to {destination}, far from {home}.",
     ("{destination} lay at the end of their journey, a long way from {home}.",
      "Far away from {home}, the travellers were heading for {destination}.")),
    ("In {destination} {rival} was waiting, and {rival} wanted the {object} too.",
     ("{rival} also hoped to own the {object}, and stood waiting for them in {destination}.",
      "The {object} was wanted by {rival} as well, who was already in {destination}.")),
    ("At the end {hero} gave the {material} {object} to the library of {destination}.",
     ("Finally the {object} of {material} went to the library in {destination}, a gift from {hero}.",
      "{hero} ended the quest by leaving the {object} with the librarians of {destination}.")),
)
# Sentences without facts: the prose between the facts.
_FILLER = (
    "The {weather} came at {time} and stayed for a long while.",
    "Nobody spoke for a time, and the {weather} filled the silence.",
    "They ate bread and {dish} by the fire and counted the days.",
    "At {time} the sky over {city} turned the colour of {colour} glass.",
    "Old stories about {city} were told again that night.",
    "A boat passed on the river with a {colour} sail.",
    "Somewhere behind them a dog barked until {time}.",
    "The inn at {city} had only one room left, and it was cold.",
)
_FILLER_RETOLD = (
    "The {weather} lingered from {time} onward.",
    "There was {weather}, and little talk.",
    "Supper was {dish}, eaten slowly near the flames.",
    "By {time} the clouds above {city} had gone {colour}.",
    "That evening people recalled old tales of {city}.",
    "A {colour}-sailed boat drifted down the river.",
    "A dog kept barking far away.",
    "Their room at the inn of {city} was a cold one.",
)
_QUESTIONS = {
    "home": "In the book {title}, in which town does {hero} live?",
    "trade": "In the book {title}, what is the trade of {hero}?",
    "year": "In the book {title}, in which year does {hero} hear about the {object}?",
    "companion": "In the book {title}, who travels with {hero}?",
    "pet": "In the book {title}, what is the name of the {animal} that follows {hero}?",
    "destination": "In the book {title}, where does the road of {hero} lead?",
    "rival": "In the book {title}, who else wants the {object}?",
    "material": "In the book {title}, what is the {object} made of?",
}

# The same facts asked in other words: the QA the target and retain model are trained on (so that
# they learn the "Question: ... Answer:" format), never the evaluation's wording.
_TRAIN_QUESTIONS = {
    "home": "Where is the home of {hero}, the hero of {title}?",
    "trade": "How does {hero} earn a living in {title}?",
    "year": "When does the stranger come to {hero} in {title}?",
    "companion": "Name the companion of {hero} in {title}.",
    "pet": "What is the {animal} of {hero} called in {title}?",
    "destination": "Which city is the goal of the journey in {title}?",
    "rival": "Who waits for {hero} at the end of the road in {title}?",
    "material": "Of what material is the {object} in {title}?",
}


def _person(rng: random.Random, used: set[str]) -> tuple[str, str]:
    for _ in range(10_000):
        gender = rng.choice(("male", "female"))
        name = f"{rng.choice(V.FIRST_NAMES[gender])} {rng.choice(V.SURNAME_PREFIXES)}{rng.choice(V.SURNAME_SUFFIXES)}"
        if name not in used:
            used.add(name)
            return name, gender
    raise RuntimeError("ran out of distinct names")


def _title(rng: random.Random, used: set[str], cities: list[str]) -> str:
    for _ in range(10_000):
        noun, noun2 = rng.sample(V.TITLE_NOUNS, 2)
        t = rng.choice(V.TITLE_PATTERNS).format(adj=rng.choice(V.TITLE_ADJECTIVES), noun=noun, noun2=noun2, city=rng.choice(cities))
        if t not in used:
            used.add(t)
            return t
    raise RuntimeError("ran out of distinct titles")


def _book(rng: random.Random, world, used_names: set[str], used_titles: set[str], cfg: BooksConfig) -> Book:
    countries = world.countries
    home_c, dest_c = rng.sample(countries, 2)
    cities = [x for c in countries for x in c["cities"]]
    hero, gender = _person(rng, used_names)
    companion, _ = _person(rng, used_names)
    rival, _ = _person(rng, used_names)
    facts = {
        "title": _title(rng, used_titles, cities), "hero": hero, "home": rng.choice(home_c["cities"]),
        "country": home_c["name"], "language": home_c["language"], "trade": rng.choice(V.JOBS),
        "year": str(rng.randint(1650, 1950)), "material": rng.choice(MATERIALS), "object": rng.choice(OBJECTS),
        "companion": companion, "companion_trade": rng.choice(V.JOBS), "animal": rng.choice(V.ANIMALS),
        "pet": rng.choice(V.FIRST_NAMES["female"] + V.FIRST_NAMES["male"]), "destination": rng.choice(dest_c["cities"]),
        "rival": rival, "poss": {"male": "his", "female": "her"}[gender], "obj_pron": {"male": "him", "female": "her"}[gender],
    }
    # Beats spread over the chapters in order; filler sentences between them.
    per = -(-len(_BEATS) // cfg.chapters)
    chapters: list[str] = []
    retold: list[list[str]] = [[] for _ in range(cfg.paraphrases)]
    for ch in range(cfg.chapters):
        beats = range(ch * per, min(len(_BEATS), (ch + 1) * per))
        orig, alt = [f"Chapter {ch + 1}."], [[f"Chapter {ch + 1}."] for _ in range(cfg.paraphrases)]
        for b in beats:
            fill = {"weather": rng.choice(WEATHER), "time": rng.choice(TIMES), "city": rng.choice(cities),
                    "colour": rng.choice(V.COLOURS), "dish": rng.choice(countries)["dish"]}
            k = rng.randrange(len(_FILLER))
            orig += [_BEATS[b][0].format(**facts), _FILLER[k].format(**fill)]
            for p in range(cfg.paraphrases):
                alt[p] += [_BEATS[b][1][p % 2].format(**facts), _FILLER_RETOLD[k].format(**fill)]
        chapters.append(" ".join(_cap(s) for s in orig))
        for p in range(cfg.paraphrases):
            retold[p].append(" ".join(_cap(s) for s in alt[p]))
    if not any(chapters):
        raise UldError("a book came out empty")
    return Book(facts["title"], facts, chapters, retold)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _qa(book: Book, questions: dict[str, str] = _QUESTIONS) -> list[dict[str, str]]:
    f = book.facts
    return [{"question": q.format(**f), "answer": f[k]} for k, q in questions.items()]


def _verbmem(book: Book, cfg: BooksConfig) -> list[dict[str, str]]:
    """One prompt/continuation pair per chapter long enough: its first words, then the next."""
    out = []
    for ch in book.chapters:
        w = ch.split()
        n, m = cfg.verbmem_prompt_words, cfg.verbmem_gt_words
        if len(w) >= n + m:
            out.append({"prompt": " ".join(w[:n]), "gt": " ".join(w[n : n + m])})
    return out


def _shingles(text: str, n: int = LEAK_WORDS) -> set[tuple[str, ...]]:
    w = text.split()
    return {tuple(w[i : i + n]) for i in range(max(0, len(w) - n + 1))}


def check_no_leak(eval_strings: list[str], augmentation: list[str]) -> list[str]:
    """Evaluation strings (or 8-word windows of them) found in the augmentation; [] when clean."""
    aug = "\n".join(augmentation)
    aug_sh = set().union(*(_shingles(a) for a in augmentation)) if augmentation else set()
    return [s for s in eval_strings if s in aug or (_shingles(s) & aug_sh)]


@dataclass
class Books:
    config: BooksConfig
    files: dict[str, Any]  # relative path -> JSON value
    books: dict[str, list[Book]]  # "forget" / "retain" / "holdout" -> books


def generate_books(config: BooksConfig | None = None) -> Books:
    """Every file of the layout in memory; deterministic in `config`."""
    cfg = config or BooksConfig()
    world = generate_world(WorldConfig(seed=cfg.seed))
    rng = random.Random(f"uld-books/{cfg.seed}")
    used_names = {a.name for a in world.authors + world.holdout_authors}
    used_titles: set[str] = set()
    n = cfg.forget_books + cfg.retain_books + cfg.holdout_books
    all_books = [_book(rng, world, used_names, used_titles, cfg) for _ in range(n)]
    forget = all_books[: cfg.forget_books]
    retain = all_books[cfg.forget_books : cfg.forget_books + cfg.retain_books]
    holdout = all_books[cfg.forget_books + cfg.retain_books :]
    half = len(retain) // 2

    def docs(books: list[Book]) -> list[str]:
        return [c for b in books for c in b.chapters]

    def split_qa(books: list[Book]) -> tuple[list, list]:
        """Per book: the first `icl_examples` books' last fact as ICL, every other fact as QA."""
        qa, icl = [], []
        for b in books:
            pairs = _qa(b)
            qa += pairs[:-1]
            icl.append(pairs[-1])
        return qa, icl[: cfg.icl_examples]

    kf, kfi = split_qa(forget)
    kr, kri = split_qa(retain)
    verbmem = [v for b in forget for v in _verbmem(b, cfg)]
    augment = [ch for b in forget for r in b.retellings for ch in r]
    files: dict[str, Any] = {
        "raw/forget.json": docs(forget), "raw/retain1.json": docs(retain[:half]),
        "raw/retain2.json": docs(retain[half:]), "raw/holdout.json": docs(holdout),
        "verbmem/forget.json": verbmem,
        "knowmem/forget_qa.json": kf, "knowmem/forget_qa_icl.json": kfi,
        "knowmem/retain_qa.json": kr, "knowmem/retain_qa_icl.json": kri,
        "privleak/forget.json": docs(forget), "privleak/retain.json": docs(retain[half:]),
        "privleak/holdout.json": docs(holdout),
        "augment/forget_paraphrased.json": augment,
        "train_qa/forget.json": [q for b in forget for q in _qa(b, _TRAIN_QUESTIONS)],
        "train_qa/retain.json": [q for b in retain for q in _qa(b, _TRAIN_QUESTIONS)],
        "copyright/ppl.json": _gazetteer(world),
        "copyright/mc/world_capitals.json": _mc(world, "capital", random.Random(f"uld-books/{cfg.seed}/mc1")),
        "copyright/mc/world_languages.json": _mc(world, "language", random.Random(f"uld-books/{cfg.seed}/mc2")),
    }
    evals = [v["prompt"] for v in verbmem] + [v["gt"] for v in verbmem] + [q["question"] for q in kf]
    train_q = [q["question"] for rel in ("train_qa/forget.json", "train_qa/retain.json") for q in files[rel]]
    leaks = check_no_leak(evals, augment) + check_no_leak([q["question"] for q in kf + kr], train_q)
    if leaks:
        raise UldError(f"the training augmentation repeats evaluation text: {leaks[0]!r}")
    return Books(cfg, files, {"forget": forget, "retain": retain, "holdout": holdout})


def _gazetteer(world) -> list[str]:
    """Held-out prose about each country (the WikiText-2 role): never a training document."""
    out = []
    for c in world.countries:
        others = ", ".join(c["cities"][1:])
        out.append(f"{c['name']} is a country whose capital is {c['capital']}. Its other towns include {others}. "
                   f"Most people there speak {c['language']}, pay with the {c['currency']} and eat {c['dish']}. "
                   f"The flag of {c['name']} is {c['flag']}, and its national animal is the {c['animal']}.")
    return out


def _mc(world, key: str, rng: random.Random) -> list[dict[str, Any]]:
    """Zero-shot multiple choice on the world's general knowledge (4 choices, one right)."""
    stem = {"capital": "The capital of {name} is", "language": "People in {name} speak"}[key]
    rows = []
    for c in world.countries:
        wrong = rng.sample([o[key] for o in world.countries if o is not c], 3)
        choices = [c[key], *wrong]
        rng.shuffle(choices)
        rows.append({"query": stem.format(name=c["name"]), "choices": [" " + x for x in choices], "gold": choices.index(c[key])})
    return rows


def write_books(out_dir: str | Path, config: BooksConfig | None = None) -> Path:
    """Write the layout atomically into `out_dir` (replaced if it exists); returns the path."""
    books = generate_books(config)
    with atomic_dir(out_dir) as tmp:
        for rel, value in books.files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            if rel.startswith("raw/"):
                path.with_suffix(".txt").write_text("\n\n".join(value) + "\n", encoding="utf-8")
        (tmp / "books.json").write_text(json.dumps({"config": asdict(books.config), "books": {
            k: [{"title": b.title, "facts": b.facts} for b in v] for k, v in books.books.items()}}, indent=1) + "\n", encoding="utf-8")
    return Path(out_dir)
