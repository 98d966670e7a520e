"""The synthetic books: deterministic, in MUSE's layout, consistent with the world, leak-checked."""

import json

import pytest

from uld.eval.copyright import load_copyright_data
from uld.eval.muse import load_muse_data
from uld.world.books import BooksConfig, check_no_leak, generate_books, write_books

SMALL = BooksConfig(forget_books=2, retain_books=2, holdout_books=1, chapters=3)


def test_same_config_writes_the_same_bytes(tmp_path):
    a, b = write_books(tmp_path / "a", SMALL), write_books(tmp_path / "b", SMALL)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert generate_books(BooksConfig(seed=1)).files != generate_books(BooksConfig(seed=0)).files


def test_layout_reads_as_muse_and_copyright_data(tmp_path):
    d = write_books(tmp_path / "books", SMALL)
    muse = load_muse_data(d)
    assert len(muse.verbmem) == 2 * 3 and len(muse.knowmem_forget) == 2 * 7 and len(muse.knowmem_retain) == 2 * 7
    assert len(muse.privleak["forget"]) == 6 and len(muse.privleak["holdout"]) == 3
    cp = load_copyright_data(d)
    assert cp.forget_texts == muse.privleak["forget"] and set(cp.mc) == {"world_capitals", "world_languages"}
    assert json.loads((d / "raw" / "retain1.json").read_text()) + json.loads((d / "raw" / "retain2.json").read_text()) == [
        c for b in generate_books(SMALL).books["retain"] for c in b.chapters]


def test_chapters_state_the_facts_their_questions_ask_and_verbmem_continues_the_text():
    books = generate_books(SMALL)
    for b in books.books["forget"]:
        text = " ".join(b.chapters)
        for key in ("hero", "home", "companion", "pet", "destination", "rival", "year", "material"):
            assert b.facts[key] in text
    for v in books.files["verbmem/forget.json"]:
        assert any(f"{v['prompt']} {v['gt']}" in c for c in books.files["raw/forget.json"])
    qa = books.files["knowmem/forget_qa.json"]
    assert all(q["answer"] in " ".join(books.files["raw/forget.json"]) for q in qa)


def test_places_come_from_the_synthetic_world():
    from uld.world import WorldConfig, generate_world

    world = generate_world(WorldConfig(seed=0))
    cities = {x for c in world.countries for x in c["cities"]}
    for b in generate_books(SMALL).books["forget"]:
        assert b.facts["home"] in cities and b.facts["destination"] in cities
        assert b.facts["hero"] not in {a.name for a in world.authors}


def test_augmentation_holds_no_evaluation_string():
    books = generate_books(SMALL)
    f = books.files
    evals = [v["prompt"] for v in f["verbmem/forget.json"]] + [v["gt"] for v in f["verbmem/forget.json"]]
    evals += [q["question"] for q in f["knowmem/forget_qa.json"]]
    aug = f["augment/forget_paraphrased.json"]
    assert len(aug) == 2 * 3 * SMALL.paraphrases
    assert check_no_leak(evals, aug) == []
    # the check does find a planted 8-word window of a continuation
    planted = aug + ["x " + " ".join(f["verbmem/forget.json"][0]["gt"].split()[:8]) + " y"]
    assert check_no_leak(evals, planted) == [f["verbmem/forget.json"][0]["gt"]]


def test_bad_sizes_are_refused_in_one_sentence():
    from uld.errors import UldError

    with pytest.raises(UldError, match="retain_books"):
        BooksConfig(retain_books=1)
