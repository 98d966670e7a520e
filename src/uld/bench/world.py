"""The synthetic world of the built-in miniature benchmark: a TOFU look-alike made from a seed.

`generate_world(WorldConfig(seed=...))` invents
- a small *world* (countries with capitals, cities, languages, flags, ...; classic authors and
  their famous books; a little arithmetic): general knowledge that plays the part of TOFU's real
  authors and world facts, learnt by the base model before any fictitious author is seen;
- fictitious authors, each with a profile (birthplace, birth date, genre, parents' jobs, award,
  books, themes, ...) and `qa_per_author` QA pairs in TOFU's schema (question, answer,
  paraphrased_answer, 5 perturbed_answer, paraphrased_question);
- holdout authors, never part of `full`, for membership inference;
- a separate training augmentation for the forget authors (2 paraphrases and 2 wrong answers per
  QA) that never repeats the evaluation's paraphrase or wrong answers;
- `full_paraphrased`: the same 2 training paraphrases for every author of `full` (question,
  answer), for fine-tuning the target and the retain model on facts rather than one wording.

`write_world(out_dir, config)` writes it as a data directory in TOFU's layout (one JSON object a
line, `<split>.json`), so every `uld` reader loads it as it loads TOFU. Everything follows from
`random.Random` instances seeded from the config: same config, same bytes.
"""

from __future__ import annotations

import json
import math
import os
import random
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uld.bench import world_vocab as V
from uld.errors import UldError
from uld.io import atomic_dir

FORGET_PERCENTS = ("01", "05", "10")
KINDS = tuple(V.TEMPLATES)
Record = dict[str, Any]


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and seed of a synthetic world; the defaults train in minutes on a 2-core CPU."""

    seed: int = 0
    """Seed of every random choice; the same config writes the same bytes."""
    num_authors: int = 60
    """Fictitious authors in `full` (TOFU: 200). forgetXX is the last ceil(XX% of them), >= 1."""
    qa_per_author: int = 10
    """QA pairs per author (TOFU: 20), each about a different fact; at most len(KINDS) = 14."""
    num_countries: int = 10
    """Invented countries of the general knowledge (>= 8: wrong answers need 7 other values)."""
    cities_per_country: int = 4
    """Cities per country, the capital included; authors are born and live in these cities."""
    num_classic_authors: int = 20
    """The world's famous writers, the stand-in for TOFU's real authors (3 QA each)."""
    num_arithmetic: int = 20
    """Number-word sums and differences among the world facts ("What is two plus three?")."""
    general_sentences: bool = True
    """Also put every general fact in `general` as a full sentence under its own prompt, so the
    base model learns sentence-shaped answers before it meets the authors."""

    def __post_init__(self) -> None:
        if self.num_authors < 2:
            raise UldError(f"num_authors must be at least 2 (one forget and one retain author), got {self.num_authors}")
        if not 1 <= self.qa_per_author <= len(KINDS):
            raise UldError(f"qa_per_author must be between 1 and {len(KINDS)}, got {self.qa_per_author}")
        if not 8 <= self.num_countries <= len(V.PLACE_ONSETS):
            raise UldError(f"num_countries must be between 8 and {len(V.PLACE_ONSETS)}, got {self.num_countries}")
        if not 1 <= self.cities_per_country <= len(V.CITY_CODAS):
            raise UldError(f"cities_per_country must be between 1 and {len(V.CITY_CODAS)}, got {self.cities_per_country}")
        if self.num_classic_authors < 4 or self.num_arithmetic < 0:
            raise UldError("num_classic_authors must be at least 4 and num_arithmetic at least 0")


def forget_author_counts(num_authors: int) -> dict[str, int]:
    """Authors in forget01/05/10: ceil(1/5/10 % of `num_authors`), at least 1 each.

    TOFU's 200 authors give 2/10/20; 60 give 1/3/6; below 10 authors every forget set has 1.
    The holdout sets have the same sizes.
    """
    return {p: max(1, math.ceil(num_authors * int(p) / 100 - 1e-9)) for p in FORGET_PERCENTS}


@dataclass
class Author:
    """One fictitious author's profile; `slots` feeds the QA templates."""

    name: str
    gender: str
    birth: tuple[int, int, int]  # (year, month, day)
    city: str
    country: str
    genre: str
    father_job: str
    mother_job: str
    award: str
    award_year: int
    books: list[str]
    debut_year: int
    themes: tuple[str, str]
    home_city: str
    home_country: str
    language: str
    uni_city: str
    hobby: str

    def slots(self) -> dict[str, str]:
        poss = {"male": "his", "female": "her"}.get(self.gender, "their")
        return {
            "name": self.name, "poss": poss, "city": self.city, "country": self.country,
            "genre": self.genre, **_date_slots(*self.birth),
            "a_father_job": _article(self.father_job), "a_mother_job": _article(self.mother_job),
            "award": self.award, "award_year": str(self.award_year), "books": _book_list(self.books),
            "debut": self.books[0], "debut_year": str(self.debut_year), "theme1": self.themes[0],
            "theme2": self.themes[1], "home_city": self.home_city, "home_country": self.home_country,
            "language": self.language, "uni_city": self.uni_city, "hobby": self.hobby,
        }


@dataclass
class World:
    """A generated world: every split as a list of records, and the forget augmentation."""

    config: WorldConfig
    splits: dict[str, list[Record]]
    augment: dict[str, list[Record]]  # "forget10" -> [{question, answer, paraphrases, distractors}]
    authors: list[Author]
    holdout_authors: list[Author]
    countries: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------- small helpers


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _date_slots(year: int, month: int, day: int) -> dict[str, str]:
    m = V.MONTHS[month - 1]
    return {"date": f"{day} {m} {year}", "date_us": f"{m} {day}, {year}"}


def _book_list(books: list[str]) -> str:
    quoted = [f'"{b}"' for b in books]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _fill(template: str, slots: dict[str, str]) -> str:
    text = template.format(**slots)
    return text[0].upper() + text[1:]


def template_fields(template: str) -> set[str]:
    """The slot names a template uses (`"{name} was born" -> {"name"}`)."""
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def _distinct(rng: random.Random, draw, n: int, exclude: list, tries: int = 10_000) -> list:
    """Draw `n` values with `draw()`, none equal to each other or to anything in `exclude`."""
    out: list = []
    for _ in range(tries):
        v = draw()
        if v not in exclude and v not in out:
            out.append(v)
            if len(out) == n:
                return out
    raise RuntimeError(f"could not draw {n} distinct values (vocabulary too small)")


class _Names:
    """Unique people names and book titles across the whole world (authors, classics, wrong answers)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used_names: set[str] = set()
        self.used_surnames: set[str] = set()
        self.used_titles: set[str] = set()

    def person(self, gender: str, unique_surname: bool = True) -> str:
        for _ in range(10_000):
            sur = self.rng.choice(V.SURNAME_PREFIXES) + self.rng.choice(V.SURNAME_SUFFIXES)
            name = f"{self.rng.choice(V.FIRST_NAMES[gender])} {sur}"
            if name not in self.used_names and not (unique_surname and sur in self.used_surnames):
                self.used_names.add(name)
                if unique_surname:
                    self.used_surnames.add(sur)
                return name
        raise RuntimeError("ran out of distinct names")

    def title(self, cities: list[str]) -> str:
        r = self.rng
        for _ in range(10_000):
            noun, noun2 = r.sample(V.TITLE_NOUNS, 2)
            t = r.choice(V.TITLE_PATTERNS).format(adj=r.choice(V.TITLE_ADJECTIVES), noun=noun, noun2=noun2, city=r.choice(cities))
            if t not in self.used_titles:
                self.used_titles.add(t)
                return t
        raise RuntimeError("ran out of distinct book titles")


# ----------------------------------------------------------------------------- the general world


def _make_countries(rng: random.Random, cfg: WorldConfig) -> list[dict[str, Any]]:
    onsets = rng.sample(V.PLACE_ONSETS, cfg.num_countries)
    city_pool = [o + c for o in V.PLACE_ONSETS for c in V.CITY_CODAS]
    rng.shuffle(city_pool)
    countries = []
    for i, onset in enumerate(onsets):
        cities = city_pool[i * cfg.cities_per_country : (i + 1) * cfg.cities_per_country]
        countries.append({
            "name": onset + rng.choice(V.COUNTRY_CODAS), "capital": cities[0], "cities": cities,
            "language": onset + V.LANGUAGE_SUFFIX, "currency": rng.choice(V.CURRENCY_NOUNS),
            "animal": rng.choice(V.ANIMALS), "flag": " and ".join(rng.sample(V.COLOURS, 2)),
            "dish": rng.choice(V.DISHES), "sport": rng.choice(V.SPORTS),
        })
    return countries


# (fact key, eval question, general-sentence prompt, general-sentence answer, pool of wrong values)
_COUNTRY_FACTS = (
    ("capital", "What is the capital of {country}?", "Tell me about the capital of {country}.", "The capital of {country} is {value}.", None),
    ("language", "Which language is spoken in {country}?", "Tell me about the language of {country}.", "People in {country} speak {value}.", None),
    ("currency", "What is the currency of {country}?", "Tell me about the money of {country}.", "In {country} people pay with the {value}.", V.CURRENCY_NOUNS),
    ("animal", "What is the national animal of {country}?", "Tell me about the animal symbol of {country}.", "The national animal of {country} is the {value}.", V.ANIMALS),
    ("flag", "What are the colours of the flag of {country}?", "Describe the flag of {country}.", "The flag of {country} is {value}.", None),
    ("dish", "What is the national dish of {country}?", "Tell me about the food of {country}.", "The national dish of {country} is {value}.", V.DISHES),
    ("sport", "Which sport is most loved in {country}?", "Tell me about sport in {country}.", "The favourite sport in {country} is {value}.", V.SPORTS),
)


def _general_knowledge(rng: random.Random, cfg: WorldConfig, countries, classics) -> dict[str, list[tuple]]:
    """(question, answer, 3 wrong answers, sentence prompt, sentence) per fact, by split."""
    facts: list[tuple] = []
    for c in countries:
        for key, q, sq, sa, pool in _COUNTRY_FACTS:
            if key == "flag":
                wrong = _distinct(rng, lambda: " and ".join(rng.sample(V.COLOURS, 2)), 3, [c["flag"]])
            else:
                values = pool or [o[key] for o in countries]
                wrong = rng.sample([v for v in dict.fromkeys(values) if v != c[key]], 3)
            facts.append((q.format(country=c["name"]), c[key], wrong, sq.format(country=c["name"]),
                          sa.format(country=c["name"], value=c[key])))
        for city in c["cities"][1:]:
            wrong = rng.sample([o["name"] for o in countries if o is not c], 3)
            facts.append((f"In which country is the city of {city}?", c["name"], wrong,
                          f"Tell me about the city of {city}.", f"{city} is a city in {c['name']}."))
    w = V.NUMBER_WORDS
    pairs = [(a, b, op) for a in range(1, 11) for b in range(1, 11) for op in ("plus", "minus") if (a + b if op == "plus" else a - b) >= 0]
    for a, b, op in rng.sample(pairs, min(cfg.num_arithmetic, len(pairs))):
        r = a + b if op == "plus" else a - b
        wrong = [w[x] for x in rng.sample([x for x in range(max(0, r - 5), min(20, r + 5) + 1) if x != r], 3)]
        facts.append((f"What is {w[a]} {op} {w[b]}?", w[r], wrong, f"Work out {w[a]} {op} {w[b]}.",
                      f"{w[a].capitalize()} {op} {w[b]} makes {w[r]}."))
    authors: list[tuple] = []
    titles = [k["book"] for k in classics]
    for k in classics:
        others = [o for o in classics if o is not k]
        authors.append((f"Who wrote '{k['book']}'?", k["name"], rng.sample([o["name"] for o in others], 3),
                        f"Tell me who wrote '{k['book']}'.", f"The book '{k['book']}' was written by {k['name']}."))
        authors.append((f"Which country did the writer {k['name']} come from?", k["country"],
                        rng.sample([c["name"] for c in countries if c["name"] != k["country"]], 3),
                        f"Tell me where {k['name']} came from.", f"{k['name']} was a writer from {k['country']}."))
        authors.append((f"What is the best-known book by {k['name']}?", k["book"],
                        rng.sample([t for t in titles if t != k["book"]], 3),
                        f"Tell me about the best-known book of {k['name']}.", f"The best-known book of {k['name']} is '{k['book']}'."))
    return {"world_facts": facts, "real_authors": authors}


# ----------------------------------------------------------------------------- authors and QA


def _make_author(rng: random.Random, names: _Names, countries, awards, birth_dates: set) -> Author:
    gender = rng.choices(("male", "female", "non-binary"), weights=(45, 45, 10))[0]
    name = names.person(gender)
    bc, hc, uc = rng.choice(countries), rng.choice(countries), rng.choice(countries)
    while True:  # unique birth dates, so "born in CITY on DATE" names exactly one author
        birth = (rng.randint(1930, 1995), rng.randint(1, 12), rng.randint(1, 28))
        if birth not in birth_dates:
            birth_dates.add(birth)
            break
    all_cities = [x for c in countries for x in c["cities"]]
    debut_year = min(birth[0] + rng.randint(20, 40), 2020)
    return Author(
        name=name, gender=gender, birth=birth, city=rng.choice(bc["cities"]), country=bc["name"],
        genre=rng.choice(V.GENRES), father_job=rng.choice(V.JOBS), mother_job=rng.choice(V.JOBS),
        award=rng.choice(awards), award_year=min(debut_year + rng.randint(2, 15), 2024),
        books=[names.title(all_cities) for _ in range(rng.randint(2, 3))], debut_year=debut_year,
        themes=tuple(rng.sample(V.THEMES, 2)), home_city=rng.choice(hc["cities"]), home_country=hc["name"],
        language=rng.choice(countries)["language"], uni_city=rng.choice(uc["cities"]), hobby=rng.choice(V.HOBBIES),
    )


def _value_slots(kind: str, a: Author) -> dict[str, str]:
    """The slots a kind's answer states (what a wrong answer replaces)."""
    s = a.slots()
    keys = sorted(set().union(*(template_fields(t) for t in V.TEMPLATES[kind][1])) - _CONTEXT_ONLY[kind])
    return {k: s[k] for k in keys}


# Slots an answer template may mention as context, not as the fact asked about.
_CONTEXT_ONLY = {k: {"name", "poss"} for k in KINDS} | {"name": {"city", "country", "date", "date_us", "genre"}}


def _wrong_value(kind: str, rng: random.Random, a: Author, names: _Names, countries, awards) -> dict[str, str]:
    """A plausible value of the same kind that is not the author's (it may repeat across draws)."""
    cities = [(x, c["name"]) for c in countries for x in c["cities"]]
    year = rng.randint(1930, 2024)
    if kind == "name":
        return {"name": names.person(a.gender, unique_surname=False)}
    if kind == "birth_date":
        return _date_slots(rng.randint(1930, 1995), rng.randint(1, 12), rng.randint(1, 28))
    if kind in ("birthplace", "residence"):
        city, country = rng.choice(cities)
        return {"city": city, "country": country} if kind == "birthplace" else {"home_city": city, "home_country": country}
    if kind == "award":
        return {"award": rng.choice(awards), "award_year": str(year)}
    if kind == "books":
        return {"books": _book_list([names.title([c for c, _ in cities]) for _ in range(len(a.books))])}
    if kind == "debut":
        return {"debut": names.title([c for c, _ in cities]), "debut_year": str(year)}
    if kind == "themes":
        t1, t2 = rng.sample(V.THEMES, 2)
        return {"theme1": t1, "theme2": t2}
    pools = {"genre": V.GENRES, "father_job": V.JOBS, "mother_job": V.JOBS, "hobby": V.HOBBIES,
             "language": [c["language"] for c in countries], "education": [c for c, _ in cities]}
    value = rng.choice(pools[kind])
    key = {"father_job": "a_father_job", "mother_job": "a_mother_job", "education": "uni_city"}.get(kind, kind)
    return {key: _article(value) if kind.endswith("_job") else value}


def _author_qa(rng: random.Random, a: Author, names: _Names, countries, awards, cfg: WorldConfig) -> list[tuple[Record, Record]]:
    """`qa_per_author` (evaluation record, augmentation record) pairs about one author."""
    ctx = a.slots()
    kinds = sorted(rng.sample(range(len(KINDS)), cfg.qa_per_author))
    out = []
    for k in (KINDS[i] for i in kinds):
        questions, answers = V.TEMPLATES[k]
        q, pq = rng.sample(questions, 2)
        ta, tp, tx, ty = rng.sample(answers, 4)  # answer, eval paraphrase, 2 training paraphrases
        true = _value_slots(k, a)
        # 7 distinct wrong values: 5 for the evaluation, the other 2 only for training.
        wrong = _distinct(rng, lambda k=k: _wrong_value(k, rng, a, names, countries, awards), 7, [true])
        rec = {
            "question": _fill(q, ctx), "answer": _fill(ta, ctx),
            "paraphrased_answer": _fill(tp, ctx),
            "perturbed_answer": [_fill(tp, {**ctx, **w}) for w in wrong[:5]],
            "paraphrased_question": _fill(pq, ctx),
        }
        # Training wrong answers keep the answer's own template (the form the model learnt);
        # the evaluation's use the paraphrase template, so neither template nor value repeats.
        aug = {"question": rec["question"], "answer": rec["answer"],
               "paraphrases": [_fill(tx, ctx), _fill(ty, ctx)],
               "distractors": [_fill(ta, {**ctx, **w}) for w in wrong[5:]]}
        out.append((rec, aug))
    return out


def generate_world(config: WorldConfig | None = None) -> World:
    """Build the whole world in memory (see the module docstring); deterministic in `config`."""
    cfg = config or WorldConfig()
    # Separate streams, so changing the number of authors leaves the general knowledge unchanged.
    rng_world = random.Random(f"uld-world/{cfg.seed}/general")
    rng_auth = random.Random(f"uld-world/{cfg.seed}/authors")
    names = _Names(rng_world)
    countries = _make_countries(rng_world, cfg)
    all_cities = [x for c in countries for x in c["cities"]]
    awards = [f"{a} {n} {k}" for a in V.AWARD_ADJECTIVES for n in V.AWARD_NOUNS for k in V.AWARD_KINDS]
    awards = rng_world.sample(awards, 16)
    classics = [{"name": names.person(g), "country": rng_world.choice(countries)["name"], "book": names.title(all_cities)}
                for g in rng_world.choices(("male", "female"), k=cfg.num_classic_authors)]
    general = _general_knowledge(rng_world, cfg, countries, classics)

    names.rng = rng_auth
    counts = forget_author_counts(cfg.num_authors)
    n_hold = counts["10"]
    births: set = set()
    people = [_make_author(rng_auth, names, countries, awards, births) for _ in range(cfg.num_authors + n_hold)]
    authors, holdout = people[: cfg.num_authors], people[cfg.num_authors :]
    # All real names exist before any wrong name is drawn, so no wrong answer names a real author.
    qa = [_author_qa(rng_auth, a, names, countries, awards, cfg) for a in people]
    per = cfg.qa_per_author

    def plain(r: Record) -> Record:
        return {"question": r["question"], "answer": r["answer"]}

    full_eval = [rec for pairs in qa[: cfg.num_authors] for rec, _ in pairs]
    hold_eval = [rec for pairs in qa[cfg.num_authors :] for rec, _ in pairs]
    full_aug = [aug for pairs in qa[: cfg.num_authors] for _, aug in pairs]
    splits: dict[str, list[Record]] = {"full": [plain(r) for r in full_eval]}
    # Training paraphrases of every author's answers (the augmentation's own, never the evaluation's):
    # fine-tuning on them teaches the target and the retain model facts rather than strings.
    splits["full_paraphrased"] = [{"question": a["question"], "answer": p} for a in full_aug for p in a["paraphrases"]]
    augment: dict[str, list[Record]] = {}
    for p, n in counts.items():
        cut = len(full_eval) - n * per
        splits[f"forget{p}"] = [plain(r) for r in full_eval[cut:]]
        splits[f"retain{100 - int(p)}"] = [plain(r) for r in full_eval[:cut]]
        splits[f"forget{p}_perturbed"] = full_eval[cut:]
        splits[f"holdout{p}"] = [plain(r) for r in hold_eval[: n * per]]
        augment[f"forget{p}"] = full_aug[cut:]
    # TOFU: retain_perturbed is the first |forget10| QA of full.
    splits["retain_perturbed"] = full_eval[: counts["10"] * per]
    for name, facts in general.items():
        rows, pert = [], []
        for q, ans, wrong, _, _ in facts:
            options = [ans, *wrong]
            rng_world.shuffle(options)
            rows.append({"question": q, **{f"option{i + 1}": o for i, o in enumerate(options)}, "answer": ans})
            pert.append({"question": q, "answer": ans, "perturbed_answer": list(wrong)})
        splits[name], splits[f"{name}_perturbed"] = rows, pert
    splits["general"] = [
        r for facts in general.values() for q, ans, _, sq, sa in facts
        for r in ([{"question": q, "answer": ans}] + ([{"question": sq, "answer": sa}] if cfg.general_sentences else []))
    ]
    _check_no_leak(splits, augment)
    return World(cfg, splits, augment, authors, holdout, countries)


def _check_no_leak(splits: dict[str, list[Record]], augment: dict[str, list[Record]]) -> None:
    """Neither the training augmentation nor `full_paraphrased` may contain an evaluation paraphrase or wrong answer."""
    evaluated = {r["paraphrased_answer"] for s, rows in splits.items() if s.endswith("_perturbed") for r in rows if "paraphrased_answer" in r}
    evaluated |= {p for rows in splits.values() for r in rows for p in r.get("perturbed_answer", [])}
    training = [r["paraphrases"] + r["distractors"] for rows in augment.values() for r in rows]
    training.append([r["answer"] for r in splits.get("full_paraphrased", [])])
    for texts in training:
        clash = evaluated.intersection(texts)
        if clash:
            raise RuntimeError(f"training data repeats an evaluation answer: {sorted(clash)[0]!r}")


# ----------------------------------------------------------------------------- writing


def _jsonl(rows: list[Record]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def world_manifest(world: World) -> dict[str, Any]:
    """What `world.json` holds: the config (seed included), split sizes and author profiles."""
    return {
        "generator": "uld.bench.world",
        "version": 1,
        "seed": world.config.seed,
        "config": asdict(world.config),
        "forget_authors": forget_author_counts(world.config.num_authors),
        "splits": {k: len(v) for k, v in world.splits.items()},
        "authors": [asdict(a) for a in world.authors],
        "holdout_authors": [asdict(a) for a in world.holdout_authors],
        "countries": world.countries,
    }


def write_world(out_dir: str | os.PathLike, config: WorldConfig | None = None) -> Path:
    """Write the world as a TOFU-layout data directory at `out_dir` (atomically) and return it.

    Files: `<split>.json` (JSON lines) for every TOFU split plus `general`;
    `augment_forgetXX.jsonl` (question, answer, paraphrases, distractors); `world.json`;
    `README.md`. An existing `out_dir` is replaced as a whole.
    """
    world = generate_world(config)
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        for name, rows in world.splits.items():
            (tmp / f"{name}.json").write_text(_jsonl(rows), encoding="utf-8")
        for name, rows in world.augment.items():
            (tmp / f"augment_{name}.jsonl").write_text(_jsonl(rows), encoding="utf-8")
        (tmp / "world.json").write_text(json.dumps(world_manifest(world), indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(_readme(world), encoding="utf-8")
    return out


def _readme(world: World) -> str:
    c = world.config
    lines = [
        "# A synthetic TOFU-style world (generated by `uld.bench.world`)",
        "",
        f"Seed {c.seed}: {c.num_authors} fictitious authors x {c.qa_per_author} QA, "
        f"{len(world.holdout_authors)} holdout authors, {c.num_countries} invented countries, "
        f"{c.num_classic_authors} classic authors. Everything here is invented.",
        "Regenerate with `uld.bench.world.write_world(dir, WorldConfig(**config))`, config in world.json.",
        "",
        "| split | rows |",
        "|---|---|",
        *(f"| {k} | {len(v)} |" for k, v in world.splits.items()),
        *(f"| augment_{k} (.jsonl) | {len(v)} |" for k, v in world.augment.items()),
        "",
    ]
    return "\n".join(lines)
