"""The people and places of a synthetic world: author profiles, invented countries, general
knowledge, and the wrong values that make a QA pair's perturbed answers."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any

from uld.world import vocab as V
from uld.world.config import KINDS, WorldConfig


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





def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _date_slots(year: int, month: int, day: int) -> dict[str, str]:
    m = V.MONTHS[month - 1]
    return {"date": f"{day} {m} {year}", "date_us": f"{m} {day}, {year}"}


def _book_list(books: list[str]) -> str:
    quoted = [f'"{b}"' for b in books]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def fill(template: str, slots: dict[str, str]) -> str:
    text = template.format(**slots)
    return text[0].upper() + text[1:]


def template_fields(template: str) -> set[str]:
    """The slot names a template uses (`"{name} was born" -> {"name"}`)."""
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def distinct(rng: random.Random, draw, n: int, exclude: list, tries: int = 10_000) -> list:
    """Draw `n` values with `draw()`, none equal to each other or to anything in `exclude`."""
    out: list = []
    for _ in range(tries):
        v = draw()
        if v not in exclude and v not in out:
            out.append(v)
            if len(out) == n:
                return out
    raise RuntimeError(f"could not draw {n} distinct values (vocabulary too small)")


class Names:
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


def make_countries(rng: random.Random, cfg: WorldConfig) -> list[dict[str, Any]]:
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


def general_knowledge(rng: random.Random, cfg: WorldConfig, countries, classics) -> dict[str, list[tuple]]:
    """(question, answer, 3 wrong answers, sentence prompt, sentence) per fact, by split."""
    facts: list[tuple] = []
    for c in countries:
        for key, q, sq, sa, pool in _COUNTRY_FACTS:
            if key == "flag":
                wrong = distinct(rng, lambda: " and ".join(rng.sample(V.COLOURS, 2)), 3, [c["flag"]])
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


def make_author(rng: random.Random, names: Names, countries, awards, birth_dates: set) -> Author:
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


def value_slots(kind: str, a: Author) -> dict[str, str]:
    """The slots a kind's answer states (what a wrong answer replaces)."""
    s = a.slots()
    keys = sorted(set().union(*(template_fields(t) for t in V.TEMPLATES[kind][1])) - _CONTEXT_ONLY[kind])
    return {k: s[k] for k in keys}


# Slots an answer template may mention as context, not as the fact asked about.
_CONTEXT_ONLY = {k: {"name", "poss"} for k in KINDS} | {"name": {"city", "country", "date", "date_us", "genre"}}


def wrong_value(kind: str, rng: random.Random, a: Author, names: Names, countries, awards) -> dict[str, str]:
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

