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
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uld.io import atomic_dir
from uld.world import vocab as V
from uld.world.config import KINDS, Record, WorldConfig, forget_author_counts
from uld.world.entities import (
    Author,
    Names,
    distinct,
    fill,
    general_knowledge,
    make_author,
    make_countries,
    value_slots,
    wrong_value,
)


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


def _author_qa(rng: random.Random, a: Author, names: Names, countries, awards, cfg: WorldConfig) -> list[tuple[Record, Record]]:
    """`qa_per_author` (evaluation record, augmentation record) pairs about one author."""
    ctx = a.slots()
    kinds = sorted(rng.sample(range(len(KINDS)), cfg.qa_per_author))
    out = []
    for k in (KINDS[i] for i in kinds):
        questions, answers = V.TEMPLATES[k]
        q, pq = rng.sample(questions, 2)
        ta, tp, tx, ty = rng.sample(answers, 4)  # answer, eval paraphrase, 2 training paraphrases
        true = value_slots(k, a)
        # 7 distinct wrong values: 5 for the evaluation, the other 2 only for training.
        wrong = distinct(rng, lambda k=k: wrong_value(k, rng, a, names, countries, awards), 7, [true])
        rec = {
            "question": fill(q, ctx), "answer": fill(ta, ctx),
            "paraphrased_answer": fill(tp, ctx),
            "perturbed_answer": [fill(tp, {**ctx, **w}) for w in wrong[:5]],
            "paraphrased_question": fill(pq, ctx),
        }
        # Training wrong answers keep the answer's own template (the form the model learnt);
        # the evaluation's use the paraphrase template, so neither template nor value repeats.
        aug = {"question": rec["question"], "answer": rec["answer"],
               "paraphrases": [fill(tx, ctx), fill(ty, ctx)],
               "distractors": [fill(ta, {**ctx, **w}) for w in wrong[5:]]}
        out.append((rec, aug))
    return out


def generate_world(config: WorldConfig | None = None) -> World:
    """Build the whole world in memory (see the module docstring); deterministic in `config`."""
    cfg = config or WorldConfig()
    # Separate streams, so changing the number of authors leaves the general knowledge unchanged.
    rng_world = random.Random(f"uld-world/{cfg.seed}/general")
    rng_auth = random.Random(f"uld-world/{cfg.seed}/authors")
    names = Names(rng_world)
    countries = make_countries(rng_world, cfg)
    all_cities = [x for c in countries for x in c["cities"]]
    awards = [f"{a} {n} {k}" for a in V.AWARD_ADJECTIVES for n in V.AWARD_NOUNS for k in V.AWARD_KINDS]
    awards = rng_world.sample(awards, 16)
    classics = [{"name": names.person(g), "country": rng_world.choice(countries)["name"], "book": names.title(all_cities)}
                for g in rng_world.choices(("male", "female"), k=cfg.num_classic_authors)]
    general = general_knowledge(rng_world, cfg, countries, classics)

    names.rng = rng_auth
    counts = forget_author_counts(cfg.num_authors)
    n_hold = counts["10"]
    births: set = set()
    people = [make_author(rng_auth, names, countries, awards, births) for _ in range(cfg.num_authors + n_hold)]
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
        "generator": "uld.world",
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
        "# A synthetic TOFU-style world (generated by `uld.world`)",
        "",
        f"Seed {c.seed}: {c.num_authors} fictitious authors x {c.qa_per_author} QA, "
        f"{len(world.holdout_authors)} holdout authors, {c.num_countries} invented countries, "
        f"{c.num_classic_authors} classic authors. Everything here is invented.",
        "Regenerate with `uld.world.write_world(dir, WorldConfig(**config))`, config in world.json.",
        "",
        "| split | rows |",
        "|---|---|",
        *(f"| {k} | {len(v)} |" for k, v in world.splits.items()),
        *(f"| augment_{k} (.jsonl) | {len(v)} |" for k, v in world.augment.items()),
        "",
    ]
    return "\n".join(lines)
