"""`uld study tofu` end to end on a tiny model and the real TOFU files, in seconds."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def tiny_model_dir(tmp_path):
    from uld.testing import tiny_llama, tiny_tokenizer

    d = tmp_path / "tiny"
    tiny_llama(num_layers=4).save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


def _tiny_cfg():
    from uld.studies.tofu import StudyConfig

    return StudyConfig(retain_authors=1, forget_authors=1, qa_per_author=2, general_items=2, finetune_epochs=1,
                       finetune_lr=1e-3, finetune_batch=2, max_length=96, eval_max_new_tokens=3, eval_batch=4)


def test_study_data_splits_follow_tofu_authors(tofu_dir, tmp_path):
    """Author i owns rows 20i..20i+19 of full; retain = first authors, forget = last ones."""
    from uld.data.records import load_split
    from uld.studies.tofu import FORGET_SPLIT, StudyConfig, prepare_data

    cfg = StudyConfig(retain_authors=2, forget_authors=1, qa_per_author=3, general_items=5)
    sizes = prepare_data(str(tofu_dir), cfg, tmp_path)
    full = load_split(str(tofu_dir), "full")
    forget = load_split(str(tmp_path), FORGET_SPLIT)
    retain = load_split(str(tmp_path), "retain")
    assert [r["question"] for r in retain] == [full[i]["question"] for i in (0, 1, 2, 20, 21, 22)]
    assert [r["question"] for r in forget] == [full[i]["question"] for i in (3980, 3981, 3982)]
    assert sizes == {"train": 9, "retain": 6, FORGET_SPLIT: 3, f"{FORGET_SPLIT}_perturbed": 3, "retain_perturbed": 6,
                     "holdout_study": 3, "real_authors_perturbed": 5, "world_facts_perturbed": 5}
    pert = load_split(str(tmp_path), f"{FORGET_SPLIT}_perturbed")
    assert [r["question"] for r in pert] == [r["question"] for r in forget] and len(pert[0]["perturbed_answer"]) == 5
    aug = [json.loads(x) for x in (tmp_path / "augment.jsonl").read_text().splitlines()]
    retain_answers = {r["answer"] for r in retain}
    assert all(len(a["distractors"]) == 2 and set(a["distractors"]) <= retain_answers for a in aug)


def test_study_runs_end_to_end_and_resumes_from_its_cache(tofu_dir, tiny_model_dir, tmp_path):
    from uld.studies.tofu import Variant, run_study

    variants = [Variant("uld", "uld", lr=1e-3, epochs=1, batch_size=2, overrides={"policy.lora_rank": 0, "policy.num_layers": 1},
                        alphas=[0.5, 1.0]),
                Variant("ga", "ga", lr=1e-5, epochs=1, batch_size=2)]
    out, cache, logs = tmp_path / "out", tmp_path / "cache", []
    result = run_study(str(tiny_model_dir), str(tofu_dir), out, cache, _tiny_cfg(), variants, log=logs.append)
    rows = result["results"]
    assert list(rows) == ["target", "retain", "uld a=0.5", "uld a=1.0", "ga"]
    assert rows["retain"]["forget_quality"] == pytest.approx(1.0)  # the reference against itself
    for r in rows.values():
        assert 0 <= r["model_utility"] <= 1 and 0 <= r["forget_quality"] <= 1
    assert rows["uld a=0.5"]["train_forget_prob"] is not None
    assert (out / "REPORT.md").read_text().startswith("# uld study tofu: tiny")
    assert (out / "fq_vs_utility.png").stat().st_size > 1000
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["split_sizes"]["forget_study"] == 2
    # a second run reuses every stage and gives the same table
    logs.clear()
    again = run_study(str(tiny_model_dir), str(tofu_dir), out, cache, _tiny_cfg(), variants, log=logs.append)
    assert not any("building" in line for line in logs)
    assert all(v == 0.0 for v in again["stage_seconds"].values())
    assert again["results"]["ga"]["model_utility"] == rows["ga"]["model_utility"]
    # a recipe changed under the same name trains anew (its stage is keyed on the recipe)
    logs.clear()
    changed = [Variant("ga", "ga", lr=2e-5, epochs=1, batch_size=2)]
    run_study(str(tiny_model_dir), str(tofu_dir), out, cache, _tiny_cfg(), changed, log=logs.append)
    assert [line for line in logs if "building" in line and "runs" in line][0].startswith("study: ga seed 0: building")
    assert variants[1].recipe_key() != changed[0].recipe_key()
    assert len(list((cache / "runs").glob("ga-*-s0"))) == 2
    # more seeds for the chosen settings: seed 0 reused, ULD's chosen weight and GA get seed 1 only
    logs.clear()
    seeded = run_study(str(tiny_model_dir), str(tofu_dir), out, cache, _tiny_cfg(), variants, log=logs.append, chosen_seeds=2)
    chosen = seeded["chosen"]
    assert chosen["baseline"] == "ga" and chosen["uld"] in ("uld a=0.5", "uld a=1.0")
    other = ({"uld a=0.5", "uld a=1.0"} - {chosen["uld"]}).pop()
    assert [len(seeded["per_seed"][k]) for k in (chosen["uld"], other, "ga")] == [2, 1, 2]
    assert seeded["results"][chosen["uld"]]["seeds"] == 2 and seeded["results"][other]["seeds"] == 1
    assert set(seeded["spread"]) == {chosen["uld"], "ga"}
    alpha = chosen["uld"].split("=")[1]
    assert sorted(p.name for p in (cache / "runs").glob("uld-*-s1/eval*")) == [f"eval-a{alpha}"]
    assert seeded["results"]["ga"]["model_utility"] == pytest.approx(
        (rows["ga"]["model_utility"] + seeded["per_seed"]["ga"][1]["model_utility"]) / 2)
    report = (out / "REPORT.md").read_text()
    assert "keep 95% of the target" in report and "## Per seed" in report and "## Spread over seeds" in report


def test_choose_takes_the_best_forget_quality_that_keeps_utility():
    from uld.studies.tofu import choose

    rows = {"a": {"forget_quality": 0.9, "model_utility": 0.50}, "b": {"forget_quality": 0.99, "model_utility": 0.40},
            "c": {"forget_quality": 0.5, "model_utility": 0.60}, "d": {"forget_quality": None, "model_utility": 0.9}}
    assert choose(rows, ["a", "b", "c", "d"], target_utility=0.5) == "a"  # b loses utility; d has no FQ
    assert choose(rows, ["a", "b", "c"], target_utility=0.4) == "b"
    assert choose(rows, ["a", "b", "c"], target_utility=0.7) == "c"  # none keeps 95 %: the highest utility
    assert choose(rows, ["d", "x"], target_utility=0.5) is None


def test_default_variants_quick_and_reported():
    from uld.studies.tofu import BASELINE_LRS, BASELINES, ULD_ALPHAS, default_variants

    quick, full = default_variants(True), default_variants(False)
    assert [v.method for v in quick] == ["uld", *BASELINES] and quick[0].alphas == [0.75]
    assert len(full) == 2 + sum(len(BASELINE_LRS[m]) for m in BASELINES) and full[0].alphas == list(ULD_ALPHAS)
    for vs in (quick, full):
        assert len({v.name for v in vs}) == len(vs) and len({v.stage_name() for v in vs}) == len(vs)
    # the quick recipe of each baseline is the reported sweep's first: one cached run serves both sizes' settings
    by_key = {v.stage_name() for v in full}
    assert all(v.stage_name() in by_key for v in quick)


def test_study_refuses_a_cache_built_with_other_settings(tofu_dir, tiny_model_dir, tmp_path):
    from dataclasses import replace

    from uld.errors import UldError
    from uld.studies.tofu import run_study

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "study.json").write_text(json.dumps({"model": "other"}))
    with pytest.raises(UldError, match="another model, data or size"):
        run_study(str(tiny_model_dir), str(tofu_dir), tmp_path / "o", cache, replace(_tiny_cfg()), [])


def test_study_cli_rejects_unknown_methods(capsys, tofu_dir):
    from uld.cli import main

    assert main(["study", "tofu", "--model", "x", "--data", str(tofu_dir), "--methods", "uld,npo3"]) == 2
    assert "unknown variant(s) npo3 in --methods" in capsys.readouterr().err
    assert main(["study", "tofu", "--model", "x", "--data", str(tofu_dir), "--chosen-seeds", "0", "--out", "never"]) == 2
    assert "--chosen-seeds must be at least 1" in capsys.readouterr().err
