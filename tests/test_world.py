"""The synthetic world of the miniature benchmark: determinism, TOFU's split rules and schema, no leaks."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from uld.data.records import available_splits, load_split
from uld.errors import UldError
from uld.world import World, WorldConfig, forget_author_counts, generate_world, write_world
from uld.world import entities as E
from uld.world import generate as W
from uld.world import vocab as V

SMALL = WorldConfig(num_authors=20, qa_per_author=6)
PERTURBED = ("forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed")


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    return write_world(tmp_path_factory.mktemp("w") / "world", SMALL)


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(SMALL)


def _digest(d: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir())}


def test_same_seed_writes_same_bytes_and_another_seed_differs(tmp_path, world_dir):
    again = write_world(tmp_path / "again", SMALL)
    other = write_world(tmp_path / "other", WorldConfig(num_authors=20, qa_per_author=6, seed=1))
    assert _digest(again) == _digest(world_dir)
    differing = [k for k, v in _digest(other).items() if _digest(world_dir)[k] != v]
    assert "full.json" in differing and "world_facts.json" in differing


def test_output_does_not_depend_on_python_hash_seed(tmp_path, world_dir):
    # str hashing is salted per process: iterating a set of strings would break determinism.
    code = f"from uld.world import write_world, WorldConfig; write_world({str(tmp_path / 'sub')!r}, WorldConfig(num_authors=20, qa_per_author=6))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert _digest(tmp_path / "sub") == _digest(world_dir)


def test_forget_counts_round_up_to_at_least_one_author():
    assert forget_author_counts(200) == {"01": 2, "05": 10, "10": 20}  # TOFU's own sizes
    assert forget_author_counts(60) == {"01": 1, "05": 3, "10": 6}
    assert forget_author_counts(20) == {"01": 1, "05": 1, "10": 2}
    assert forget_author_counts(2) == {"01": 1, "05": 1, "10": 1}


def test_splits_follow_tofu_rules(world):
    s, per = world.splits, SMALL.qa_per_author
    counts = forget_author_counts(SMALL.num_authors)  # 1 / 1 / 2 authors
    assert len(s["full"]) == SMALL.num_authors * per
    for p, retain in (("01", "retain99"), ("05", "retain95"), ("10", "retain90")):
        n = counts[p] * per
        assert s[f"forget{p}"] == s["full"][-n:]  # the last authors of full
        assert s[retain] == s["full"][:-n]
        assert [{k: r[k] for k in ("question", "answer")} for r in s[f"forget{p}_perturbed"]] == s[f"forget{p}"]
        assert len(s[f"holdout{p}"]) == n
        assert s[f"holdout{p}"] == s["holdout10"][:n]  # nested, as in TOFU
    assert [{k: r[k] for k in ("question", "answer")} for r in s["retain_perturbed"]] == s["full"][: counts["10"] * per]
    assert len(s["real_authors"]) == 3 * SMALL.num_classic_authors


def test_forget_retain_disjoint_and_holdout_authors_never_in_full(world):
    s = world.splits
    forget_names = {a.name for a in world.authors[-2:]}
    for p, retain in (("01", "retain99"), ("05", "retain95"), ("10", "retain90")):
        assert not {r["question"] for r in s[f"forget{p}"]} & {r["question"] for r in s[retain]}
    retain_text = " ".join(r["question"] + r["answer"] for r in s["retain90"])
    assert not any(n in retain_text for n in forget_names)
    full_text = " ".join(r["question"] + " " + r["answer"] for r in s["full"])
    hold = [a.name for a in world.holdout_authors]
    assert len(hold) == 2 and not any(n in full_text for n in hold)
    assert all(any(n in r["question"] + r["answer"] for n in hold) for r in s["holdout10"])


def test_augmentation_never_repeats_evaluation_paraphrases_or_wrong_answers(world_dir):
    evaluated = set()
    for split in PERTURBED + ("world_facts_perturbed", "real_authors_perturbed"):
        for r in load_split(world_dir, split):
            evaluated |= set(r["perturbed_answer"]) | {r.get("paraphrased_answer")}
    forget = {r["question"]: r for r in load_split(world_dir, "forget10_perturbed")}
    aug = load_split(world_dir, "augment_forget10", required=("question", "answer", "paraphrases", "distractors"))
    assert [r["question"] for r in aug] == list(forget)
    for r in aug:
        assert len(r["paraphrases"]) == 2 and len(r["distractors"]) == 2
        texts = r["paraphrases"] + r["distractors"]
        assert len(set(texts)) == 4 and r["answer"] not in texts
        assert not evaluated & set(texts)


def test_leak_check_catches_a_repeated_wrong_answer(world):
    aug = {"forget10": [dict(world.augment["forget10"][0])]}
    aug["forget10"][0]["distractors"] = [world.splits["forget10_perturbed"][0]["perturbed_answer"][3]]
    with pytest.raises(RuntimeError, match="repeats an evaluation answer"):
        W._check_no_leak(world.splits, aug)


def test_full_paraphrased_holds_the_augmentation_paraphrases_of_every_author_and_no_evaluation_answer(world_dir):
    full = load_split(world_dir, "full")
    para = load_split(world_dir, "full_paraphrased")
    assert len(para) == 2 * len(full)
    assert [r["question"] for r in para[::2]] == [r["question"] for r in full]
    assert not {r["answer"] for r in para} & {r["answer"] for r in full}
    evaluated = set()
    for split in PERTURBED:
        for r in load_split(world_dir, split):
            evaluated |= set(r["perturbed_answer"]) | {r["paraphrased_answer"]}
    assert not evaluated & {r["answer"] for r in para}
    # For the forget authors they are exactly the augmentation's paraphrases (one source of truth).
    aug = load_split(world_dir, "augment_forget10", required=("question", "answer", "paraphrases", "distractors"))
    assert [r["answer"] for r in para[-2 * len(aug):]] == [p for r in aug for p in r["paraphrases"]]


def test_leak_check_catches_an_evaluation_paraphrase_in_full_paraphrased(world):
    splits = dict(world.splits)
    splits["full_paraphrased"] = [{"question": "q", "answer": world.splits["retain_perturbed"][0]["paraphrased_answer"]}]
    with pytest.raises(RuntimeError, match="repeats an evaluation answer"):
        W._check_no_leak(splits, world.augment)


def test_wrong_answers_differ_from_the_answer_and_from_each_other(world):
    for split in PERTURBED:
        for r in world.splits[split]:
            wrong = r["perturbed_answer"]
            assert len(wrong) == 5 and len(set(wrong)) == 5
            assert r["answer"] not in wrong and r["paraphrased_answer"] not in wrong
            assert r["paraphrased_answer"] != r["answer"] and r["paraphrased_question"] != r["question"]
    for split in ("world_facts_perturbed", "real_authors_perturbed"):
        for r in world.splits[split]:
            assert len(set(r["perturbed_answer"])) == 3 and r["answer"] not in r["perturbed_answer"]


def test_every_split_loads_like_tofu(world_dir):
    assert {"full", "forget10_perturbed", "general", "holdout01", "augment_forget01"} <= set(available_splits(world_dir))
    for split in available_splits(world_dir):
        if split == "world":  # world.json: the generator's config, not a split
            continue
        required = ("question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question") if split in PERTURBED else ("question", "answer")
        assert load_split(world_dir, split, required=required)
    manifest = json.loads((world_dir / "world.json").read_text())
    assert manifest["seed"] == 0 and manifest["config"]["num_authors"] == 20


def test_field_names_match_the_tofu_mirror(world_dir, tofu_dir):
    for f in sorted(tofu_dir.glob("*.json")):
        theirs = json.loads(f.read_text().splitlines()[0])
        ours = load_split(world_dir, f.stem)[0]
        assert list(ours) == list(theirs), f.stem
        for k, v in theirs.items():
            assert type(ours[k]) is type(v) and (not isinstance(v, list) or len(ours[k]) == len(v)), (f.stem, k)


def test_every_answer_template_states_every_value_of_its_kind():
    # Otherwise a wrong value could leave a "wrong" answer identical to the right one.
    for kind, (questions, answers) in V.TEMPLATES.items():
        assert len(questions) >= 2 and len(answers) >= 4, kind
        # date and date_us are two renderings of one value: a wrong date changes both.
        values = [{f.replace("date_us", "date") for f in E.template_fields(t) - E._CONTEXT_ONLY[kind]} for t in answers]
        assert all(v == values[0] and v for v in values), kind


def test_general_knowledge_does_not_depend_on_the_authors():
    a, b = generate_world(SMALL), generate_world(WorldConfig(num_authors=7, qa_per_author=3))
    for split in ("general", "world_facts_perturbed", "real_authors_perturbed"):
        assert a.splits[split] == b.splits[split]
    assert len(b.splits["full"]) == 21 and len(b.splits["forget10"]) == 3


def test_answers_are_short_sentences(world):
    lengths = [len(r["answer"].split()) for r in world.splits["full"]]
    assert 5 <= min(lengths) and max(lengths) <= 30


@pytest.mark.parametrize(
    "kwargs", [{"num_authors": 1}, {"qa_per_author": 0}, {"qa_per_author": 15}, {"num_countries": 5}]
)
def test_config_rejects_impossible_sizes(kwargs):
    with pytest.raises(UldError):
        WorldConfig(**kwargs)
